# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Create the CEP Formación reference schema and fill it with deterministic data.

Part of the reference platform (``reference_platform/``), not of the collection.

All rows are made by the server (``INSERT ... SELECT ... FROM generate_series``); every value is
a function of the row number and ``--seed`` (``hashint8extended``/``md5``), never of ``random()``
or ``now()``, so the same seed and size give the same content (compare with checksum.py).

    PGPASSWORD=... python3 reference_platform/generate_data.py --host 127.0.0.1 --port 5432 \\
        --user postgres --dbname cepcomunicacion --size small --seed 42

Sizes: ``tiny`` (~2 MB, unit/integration tests), ``small`` (~20 MB, demo), ``1GB`` (benchmarks),
or any ``<number>[KB|MB|GB]`` (binary units, like pg_size_pretty). The size is the data the
platform tables take on disk (tables + indexes + TOAST); pg_database_size adds the ~7.5 MB an
empty database already has. Progress goes to stderr, a one-line JSON summary to stdout.

Only empty platform tables are filled; ``--reset`` truncates them first. The password comes from
PGPASSWORD, ~/.pgpass or the DSN you pass in the environment, never from a flag.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

try:
    import psycopg2
    from psycopg2 import sql as pgsql
    from psycopg2.extensions import make_dsn, parse_dsn
except ImportError:  # pragma: no cover
    sys.exit("generate_data.py needs psycopg2 (pip install psycopg2-binary)")

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_FILE = os.path.join(HERE, "schema.sql")

MIB = 1024 * 1024
PRESETS = {"tiny": 2 * MIB, "small": 20 * MIB, "medium": 200 * MIB, "large": 1024 * MIB}
UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": MIB, "MB": MIB, "MIB": MIB,
         "G": 1024 * MIB, "GB": 1024 * MIB, "GIB": 1024 * MIB}

# Platform tables in load order (parents first). Keys everywhere are schema-qualified.
TABLES = ("public.app_settings", "public.courses", "public.lessons", "public.students",
          "public.media_assets", "public.enrollments", "public.payments", "public.audit_log",
          "reporting.monthly_revenue")

# --------------------------------------------------------------------------- vocabulary
FIRST_NAMES = ["José", "María", "Lucía", "Álvaro", "Íñigo", "Begoña", "Martín", "Sofía", "Hugo",
               "Inés", "Raúl", "Nerea", "Adrián", "Aitana", "Jesús", "Dácil", "Óscar", "Yaiza",
               "Tomás", "Ainhoa", "Rubén", "Elena", "Andrés", "Carmen", "Sebastián", "Noemí",
               "Joaquín", "Ángela", "Iván", "Paula", "Víctor", "Nuria", "Fátima", "Beñat",
               "Candelaria", "Echedey", "Guacimara", "Ramón", "Verónica", "Moisés"]
SURNAMES = ["García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez",
            "Pérez", "Gómez", "Martín", "Jiménez", "Hernández", "Díaz", "Moreno", "Muñoz",
            "Álvarez", "Romero", "Gutiérrez", "Navarro", "Domínguez", "Ibáñez", "Núñez", "Peña",
            "Castaño", "Cabrera", "Afonso", "Perdomo", "Expósito", "Bethencourt", "Quintero",
            "Acosta", "Mendoza", "Suárez", "Ortega", "Rubio", "Marín", "Sanz", "Delgado",
            "Castro", "Ramírez"]
CITIES = ["Santa Cruz de Tenerife", "San Cristóbal de La Laguna", "Las Palmas de Gran Canaria",
          "Arona", "Adeje", "La Orotava", "Puerto de la Cruz", "Telde", "Güímar", "Icod de los Vinos",
          "Los Realejos", "Granadilla de Abona", "Madrid", "Málaga", "Córdoba", "A Coruña",
          "Cádiz", "León", "Ávila", "Logroño", "Castellón de la Plana", "Móstoles", "Alcalá de Henares",
          "Jaén", "Almería", "San Sebastián de La Gomera", "Valverde", "Santa Cruz de La Palma"]
DOMAINS = ["gmail.com", "hotmail.es", "yahoo.es", "outlook.com", "cepcomunicacion.com",
           "telefonica.net", "icloud.com", "protonmail.com"]
# (course title, category)
COURSE_TOPICS = [("Atención sociosanitaria a personas dependientes", "Servicios sociales"),
                 ("Inglés B1 para hostelería", "Idiomas"),
                 ("Community manager y redes sociales", "Comunicación"),
                 ("Prevención de riesgos laborales", "Seguridad"),
                 ("Diseño gráfico con herramientas libres", "Diseño"),
                 ("Contabilidad y fiscalidad para pymes", "Administración"),
                 ("Marketing digital y posicionamiento web", "Marketing"),
                 ("Operaciones básicas de cocina", "Hostelería"),
                 ("Logística y gestión de almacén", "Logística"),
                 ("Programación en Python desde cero", "Informática"),
                 ("Atención al cliente en español y alemán", "Idiomas"),
                 ("Manipulación de alimentos", "Hostelería"),
                 ("Gestión de nóminas y seguros sociales", "Administración"),
                 ("Fotografía y edición de vídeo", "Diseño"),
                 ("Guía de turismo rural y de naturaleza", "Turismo"),
                 ("Ofimática avanzada: hojas de cálculo", "Informática"),
                 ("Monitor de ocio y tiempo libre", "Servicios sociales"),
                 ("Energía solar fotovoltaica", "Energía"),
                 ("Primeros auxilios y desfibrilación", "Sanidad"),
                 ("Comunicación eficaz en la empresa", "Comunicación"),
                 ("Carretillero y operador de plataformas", "Logística"),
                 ("Lengua de signos española", "Idiomas"),
                 ("Dinamización comunitaria", "Servicios sociales"),
                 ("Creación de tiendas en línea", "Comercio")]
LEVELS = ["nivel básico", "nivel intermedio", "nivel avanzado", "edición de mañana",
          "edición de tarde", "modalidad intensiva", "certificado de profesionalidad"]
MEDIA_KINDS = [("video/mp4", "mp4", 5000000, 400000000), ("application/pdf", "pdf", 40000, 6000000),
               ("image/jpeg", "jpg", 30000, 4000000), ("image/png", "png", 8000, 2000000),
               ("audio/mpeg", "mp3", 500000, 60000000)]
PAY_METHODS = ["tarjeta", "transferencia", "bizum", "domiciliación", "efectivo"]
ACTIONS = ["login", "view", "view", "view", "update", "create", "download", "logout", "delete",
           "export.csv", "email.sent", "payment.capture", "enrollment.create", "password.reset"]
ENTITIES = ["course", "student", "enrollment", "payment", "lesson", "media_asset", "session",
            "setting"]
STAFF = ["secretaria", "direccion", "tutoria.online", "coordinacion", "soporte", "contabilidad",
         "orientacion", "admin"]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.163 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 Edg/119.0.2151.72",
    "Mozilla/5.0 (Linux; Android 13; M2101K6G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Mobile Safari/537.36",
    "cepcomunicacion-app/3.4.1 (Android 14; es_ES)", "cepcomunicacion-app/3.4.0 (iOS 17.1; es_ES)",
    "curl/7.88.1", "python-requests/2.31.0",
]
# word pool for free text; accents on purpose
WORDS = (
    "el la los las un una de del en con por para sobre entre hacia sin según durante alumno "
    "alumna curso cursos módulo unidad lección tutoría tutor profesora evaluación examen práctica "
    "prácticas empresa certificado matrícula plazo inscripción beca subvención horario aula "
    "plataforma campus virtual contenido vídeo documento ejercicio tarea entrega calificación nota "
    "asistencia ausencia justificante solicitud revisión incidencia consulta respuesta mensaje "
    "correo teléfono secretaría dirección coordinación orientación laboral empleo formación "
    "profesional continua ocupados desempleados programa convocatoria resolución pago recibo "
    "factura transferencia devolución importe cuota descuento gratuito presencial online "
    "semipresencial grupo sesión semana mes trimestre lunes martes miércoles jueves viernes "
    "mañana tarde hoy ayer pronto tarde siempre nunca también además sin_embargo porque aunque "
    "cuando donde mientras bien mal correcto pendiente completado cancelado aprobado suspendido "
    "revisado enviado recibido actualizado creado eliminado descargado publicado accesible "
    "obligatorio opcional importante urgente nuevo nueva primera segunda última final inicial "
    "básico avanzado intermedio práctico teórico Tenerife Canarias Laguna Santa Cruz Orotava "
    "Adeje Arona Güímar está están tiene tienen puede pueden debe deben hace hacen ha han "
    "quedó queda faltan faltó revisa revisar enviar recibir descargar consultar solicitar "
    "aprobar completar repetir recuperar acreditar superar acceder conectar registrar"
).split()


# syllables for a seeded lexicon of made-up names and terms: with real words alone the text
# compresses ~4x (too easy for gzip/zstd); this mix gives the ~3x of real-world prose
SYLLABLES = ("ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge gi go gu ja je jo "
             "la le li lo lu ma me mi mo mu na ne ni no nu ña pa pe pi po pu ra re ri ro ru sa se "
             "si so su ta te ti to tu va ve vi za zo cha che chi lla lle llo tra tre tri bra bre "
             "pla ple gra gre cla fra ción dad mente ía ón án én ár ér ir al el os as es ura ero era "
             "ista ado ada ido ida").split()
TEXT_POOL_SIZE = 16384  # sentences; ~1.3 MB, larger than zstd -1's window


def text_pool(seed, size=TEXT_POOL_SIZE):
    """Deterministic Spanish-looking sentences (the only Python-side randomness, seeded)."""
    rng = random.Random("cep-text-%d" % seed)
    lexicon = ["".join(rng.choice(SYLLABLES) for _syllable in range(rng.randint(2, 4)))
               for _word in range(6000)]
    pool = []
    for _sentence in range(size):
        words = []
        for _word in range(rng.randint(5, 22)):
            roll = rng.random()
            if roll < 0.40:
                words.append(rng.choice(lexicon))
            elif roll < 0.46:
                words.append(str(rng.randint(0, 99999)))
            else:
                words.append(rng.choice(WORDS).replace("_", " "))
        sentence = " ".join(words)
        pool.append(sentence[0].upper() + sentence[1:] + rng.choice([".", ".", ".", "?", "!", "..."]))
    return pool


def app_settings_rows():
    return [
        ("site.name", {"es": "CEP Formación", "en": "CEP Training"}, "Nombre público del campus"),
        ("site.timezone", "Atlantic/Canary", "Zona horaria de la sede"),
        ("site.locale", "es_ES", None),
        ("mail.from", "CEP Formación <no-responder@cepcomunicacion.com>", "Remitente de avisos"),
        ("mail.signature", "Un saludo,\nSecretaría académica — CEP Formación", "Firma de correos"),
        ("enrollment.max_per_student", 6, "Matrículas simultáneas por alumno"),
        ("enrollment.open", True, None),
        ("enrollment.deadline_days", 15, "Días de plazo antes del inicio"),
        ("payments.methods", PAY_METHODS, "Formas de pago admitidas"),
        ("payments.vat_rate", 0.07, "IGIC aplicado (Canarias)"),
        ("payments.currency", "EUR", None),
        ("media.max_upload_mb", 512, "Tamaño máximo por archivo"),
        ("media.allowed_types", [k[0] for k in MEDIA_KINDS], None),
        ("gdpr.retention_years", 5, "Conservación de datos personales (años)"),
        ("gdpr.dpo_email", "dpd@cepcomunicacion.com", "Delegado de protección de datos"),
        ("ui.theme", {"primary": "#0055a4", "accent": "#f2a900", "dark_mode": False}, None),
        ("ui.banner", None, "Aviso en portada (null = sin aviso)"),
        ("features.certificates_pdf", True, "Emitir certificados en PDF"),
        ("features.chat", False, None),
        ("backup.contact", "sistemas@cepcomunicacion.com", "Avisos de copias de seguridad"),
    ]


# --------------------------------------------------------------------------- sizing
def parse_size(text):
    """'tiny' | 'small' | 'medium' | 'large' | '<number>[KB|MB|GB]' -> bytes (binary units)."""
    key = text.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", text.strip())
    if not match or match.group(2).upper() not in UNITS:
        raise ValueError("size %r not understood: use tiny, small, medium, large or a number "
                         "with KB/MB/GB, e.g. 200MB or 1GB" % text)
    value = int(float(match.group(1)) * UNITS[match.group(2).upper()])
    if value < 512 * 1024:
        raise ValueError("size %r is too small: the empty schema alone takes ~0.5 MB" % text)
    return value


# Measured bytes on disk per row (heap + indexes) for this content; used only to turn a size
# into row counts. Row counts are a pure function of the size, which keeps runs deterministic.
BYTES_PER = {"student": 365, "enrollment": 173, "payment": 183, "audit": 805,
             "lesson": 620, "media": 390, "course": 900}
FIXED_OVERHEAD = 560 * 1024  # empty tables, indexes, FSM/VM forks
LESSONS_PER_COURSE = 8
MEDIA_PER_LESSON = 2
ENROLLMENTS_PER_STUDENT = 3
AUDIT_PER_STUDENT = 6


def plan_rows(target_bytes):
    """Row counts per table for a target size in bytes."""
    courses = 40 + target_bytes // (32 * MIB)
    lessons = courses * LESSONS_PER_COURSE
    media = lessons * MEDIA_PER_LESSON
    fixed = (FIXED_OVERHEAD + courses * BYTES_PER["course"] + lessons * BYTES_PER["lesson"]
             + media * BYTES_PER["media"])
    per_student = (BYTES_PER["student"] + ENROLLMENTS_PER_STUDENT * BYTES_PER["enrollment"]
                   + ENROLLMENTS_PER_STUDENT * 4 / 5 * BYTES_PER["payment"]
                   + AUDIT_PER_STUDENT * BYTES_PER["audit"])
    students = max(40, int((target_bytes - fixed) / per_student))
    enrollments = students * ENROLLMENTS_PER_STUDENT
    return {
        "courses": int(courses), "lessons": int(lessons), "media_assets": int(media),
        "students": students, "enrollments": enrollments,
        "payments": enrollments * 4 // 5,  # every 5th enrollment has no payment yet
        "audit_log": students * AUDIT_PER_STUDENT,
    }


# --------------------------------------------------------------------------- SQL building
def lit(value):
    """SQL literal for trusted constants (vocabulary, numbers) built here, not user input."""
    if isinstance(value, str):
        return "'%s'" % value.replace("'", "''")
    return str(int(value))


def arr(values):
    return "(ARRAY[%s])" % ", ".join(lit(v) for v in values)


class Sql:
    """Expression builder: h(k) is a non-negative 31-bit hash of (row number, seed, k)."""

    def __init__(self, seed):
        self.seed = seed

    def h(self, k, of="n"):
        return "(hashint8extended(%s, %d) & 2147483647)" % (of, self.seed * 1000 + k)

    def pick(self, values, k, of="n"):
        return "%s[1 + %s %% %d]" % (arr(values), self.h(k, of), len(values))

    def text(self, k, of="n"):
        """Join key into the per-session text pool (TEXT_POOL_SIZE sentences, a power of 2)."""
        return "(%s & %d)" % (self.h(k, of), TEXT_POOL_SIZE - 1)


def statements(seed, plan):
    """Load phases, parents first: [{table: (rows, build(lo, hi) -> INSERT ... SELECT)}].
    A phase starts only when the one before it has finished (foreign keys)."""
    s = Sql(seed)
    C, L, S, M = plan["courses"], plan["lessons"], plan["students"], plan["media_assets"]
    E, P, A = plan["enrollments"], plan["payments"], plan["audit_log"]
    lpc, mpl = LESSONS_PER_COURSE, MEDIA_PER_LESSON
    step_max = max(1, (C - 1) // 3)

    def course_of(student, k):
        # three distinct courses per student: base + k*step with step < C/3
        return "(1 + (%s + (%s) * (1 + %s %% %d)) %% %d)" % (
            s.h(301, student), k, s.h(302, student), step_max, C)

    ts = "(timestamptz '%s' + %s * interval '1 second')"  # ts % (base, seconds expression)

    def courses(lo, hi):
        return f"""
INSERT INTO public.courses (id, code, title, description, category, modality, hours, price,
                            subsidized, starts_on, created_at)
SELECT n,
       'CEP-' || upper(left(translate(category, 'áéíóú ', 'aeiou'), 3)) || '-' || lpad(n::text, 4, '0'),
       title || ' (' || {s.pick(LEVELS, 3)} || ')',
       CASE WHEN {s.h(4)} % 10 = 0 THEN NULL ELSE t1.txt || ' ' || t2.txt END,
       category,
       {s.pick(["presencial", "online", "semipresencial"], 5)},
       20 + {s.h(6)} % 281,
       round(({s.h(7)} % 120000) / 100.0 + 49, 2),
       {s.h(8)} % 3 = 0,
       date '2024-01-08' + ({s.h(9)} % 730)::int,
       {ts % ('2023-06-01 08:00:00+00', s.h(10) + ' % 15000000')}
FROM generate_series({lo}::bigint, {hi}) AS n
JOIN (VALUES {", ".join("(%d, %s, %s)" % (i, lit(t), lit(c)) for i, (t, c) in enumerate(COURSE_TOPICS))})
     AS topic(id, title, category) ON topic.id = {s.h(2)} % {len(COURSE_TOPICS)}
JOIN pg_temp.gen_text t1 ON t1.id = {s.text(11)}
JOIN pg_temp.gen_text t2 ON t2.id = {s.text(12)}"""

    def lessons(lo, hi):
        return f"""
INSERT INTO public.lessons (id, course_id, position, title, body, duration_minutes, published)
SELECT n, (n - 1) / {lpc} + 1, (n - 1) % {lpc} + 1,
       'Unidad ' || ((n - 1) % {lpc} + 1) || ': ' || left(t1.txt, (20 + {s.h(21)} % 40)::int),
       t2.txt || E'\\n\\n' || t3.txt || CASE WHEN {s.h(22)} % 2 = 0 THEN E'\\n\\n' || t1.txt ELSE '' END,
       CASE WHEN {s.h(23)} % 12 = 0 THEN NULL ELSE 15 + {s.h(24)} % 106 END,
       {s.h(25)} % 10 < 8
FROM generate_series({lo}::bigint, {hi}) AS n
JOIN pg_temp.gen_text t1 ON t1.id = {s.text(26)}
JOIN pg_temp.gen_text t2 ON t2.id = {s.text(27)}
JOIN pg_temp.gen_text t3 ON t3.id = {s.text(28)}"""

    accents_from, accents_to = "áéíóúüñÁÉÍÓÚÜÑ ", "aeiouunAEIOUUN"

    def students(lo, hi):
        return f"""
INSERT INTO public.students (id, dni, first_name, last_name, email, phone, city, birth_date,
                             gdpr_consent, notes, created_at, updated_at)
SELECT n, dni, first_name, last_name,
       lower(translate(first_name || '.' || split_part(last_name, ' ', 1), '{accents_from}', '{accents_to}'))
           || n || '@' || {s.pick(DOMAINS, 41)},
       CASE WHEN {s.h(42)} % 100 < 85
            THEN '+34 6' || lpad(({s.h(43)} % 100000000)::text, 8, '0') END,
       CASE WHEN {s.h(44)} % 100 < 97 THEN {s.pick(CITIES, 45)} END,
       CASE WHEN {s.h(46)} % 100 < 95 THEN date '1958-01-01' + ({s.h(47)} % 17000)::int END,
       {s.h(48)} % 10 <> 0,
       CASE WHEN {s.h(49)} % 100 < 20 THEN t1.txt END,
       created_at,
       CASE WHEN {s.h(50)} % 4 = 0 THEN created_at + ({s.h(51)} % 20000000) * interval '1 second' END
FROM (SELECT n,
             lpad(dni_num::text, 8, '0') || substr('TRWAGMYFPDXBNJZSQVHLCKE', (dni_num % 23)::int + 1, 1) AS dni,
             {s.pick(FIRST_NAMES, 52)} AS first_name,
             {s.pick(SURNAMES, 53)} || ' ' || {s.pick(SURNAMES, 54)} AS last_name,
             {ts % ('2022-01-01 00:00:00+00', s.h(55) + ' % 60000000')} AS created_at
      FROM generate_series({lo}::bigint, {hi}) AS n,
           LATERAL (SELECT (n * 7919 + {seed % 100000000}) % 100000000 AS dni_num) AS d) AS g
JOIN pg_temp.gen_text t1 ON t1.id = {s.text(56)}"""

    def media(lo, hi):
        return f"""
INSERT INTO public.media_assets (id, lesson_id, path, mime_type, size_bytes, sha256, thumbnail, uploaded_at)
SELECT n,
       CASE WHEN {s.h(61)} % 20 = 0 THEN NULL ELSE lesson END,
       'cursos/' || lpad(((lesson - 1) / {lpc} + 1)::text, 4, '0') || '/unidad-'
           || lpad(((lesson - 1) % {lpc} + 1)::text, 2, '0') || '/recurso-' || n || '.' || k.ext,
       k.mime,
       k.lo + {s.h(62)} % (k.hi - k.lo),
       encode(sha256(convert_to('cep-media-{seed}-' || n, 'UTF8')), 'hex'),
       CASE WHEN k.mime LIKE 'image/%' OR k.mime LIKE 'video/%'
            THEN decode(md5('thumb-{seed}-' || n) || md5('thumb2-{seed}-' || n), 'hex') END,
       {ts % ('2023-07-01 00:00:00+00', s.h(63) + ' % 40000000')}
FROM (SELECT n, (n - 1) / {mpl} + 1 AS lesson, 1 + {s.h(64)} % {len(MEDIA_KINDS)} AS kind
      FROM generate_series({lo}::bigint, {hi}) AS n) AS g
JOIN (VALUES {", ".join("(%d, %s, %s, %d, %d)" % (i + 1, lit(m), lit(e), a, b)
                         for i, (m, e, a, b) in enumerate(MEDIA_KINDS))}) AS k(id, mime, ext, lo, hi)
  ON k.id = g.kind"""

    def enrollments(lo, hi):
        return f"""
INSERT INTO public.enrollments (id, student_id, course_id, status, enrolled_at, completed_at, grade)
SELECT n, student, {course_of("student", "k")}, status::public.enrollment_status, enrolled_at,
       CASE WHEN status = 'completada' THEN enrolled_at + (20 + {s.h(71)} % 200) * interval '1 day' END,
       CASE WHEN status = 'completada' THEN round((350 + {s.h(72)} % 651) / 100.0, 2) END
FROM (SELECT n, (n - 1) / {ENROLLMENTS_PER_STUDENT} + 1 AS student,
             (n - 1) % {ENROLLMENTS_PER_STUDENT} AS k,
             CASE WHEN {s.h(73)} % 100 < 10 THEN 'pendiente'
                  WHEN {s.h(73)} % 100 < 55 THEN 'activa'
                  WHEN {s.h(73)} % 100 < 92 THEN 'completada' ELSE 'cancelada' END AS status,
             {ts % ('2023-01-01 00:00:00+00', s.h(74) + ' % 63000000')} AS enrolled_at
      FROM generate_series({lo}::bigint, {hi}) AS n) AS g"""

    # payment n belongs to enrollment e = n + (n-1)/4: every 5th enrollment is unpaid
    def payments(lo, hi):
        return f"""
INSERT INTO public.payments (id, invoice_number, student_id, course_id, amount, currency, method,
                             paid, paid_at, reference)
SELECT n, 100000 + n, student, c.id,
       CASE WHEN c.subsidized THEN 0 ELSE round(c.price * (ARRAY[1, 1, 1, 0.9, 0.85, 0.5])[1 + {s.h(81)} % 6], 2) END,
       'EUR', method, paid,
       CASE WHEN paid THEN {ts % ('2023-01-15 00:00:00+00', s.h(82) + ' % 63000000')} END,
       CASE method WHEN 'efectivo' THEN NULL
                   WHEN 'transferencia' THEN 'TRF-' || upper(left(md5('pay-{seed}-' || n), 12))
                   ELSE 'PAY-' || left(md5('pay-{seed}-' || n), 20) END
FROM (SELECT n, e, (e - 1) / {ENROLLMENTS_PER_STUDENT} + 1 AS student,
             (e - 1) % {ENROLLMENTS_PER_STUDENT} AS k,
             {s.pick(PAY_METHODS, 83)} AS method, {s.h(84)} % 10 < 9 AS paid
      FROM generate_series({lo}::bigint, {hi}) AS n, LATERAL (SELECT n + (n - 1) / 4 AS e) AS x) AS g
JOIN public.courses c ON c.id = {course_of("g.student", "g.k")}"""

    span_seconds = 2 * 365 * 86400
    gap_ms = max(1, span_seconds * 1000 // max(A, 1))

    def audit(lo, hi):
        return f"""
INSERT INTO public.audit_log (id, occurred_at, actor, action, entity, entity_id, client_ip,
                              user_agent, payload, message)
SELECT n,
       timestamptz '2024-01-01 00:00:00+00' + (n * {gap_ms} + {s.h(91)} % {gap_ms}) * interval '1 millisecond',
       actor, action, entity, entity_id,
       CASE WHEN actor IS NULL THEN NULL
            WHEN {s.h(92)} % 3 = 0 THEN inet '10.20.0.0' + {s.h(93)} % 65536
            ELSE inet '83.32.0.0' + {s.h(93)} % 8388608 END,
       CASE WHEN actor IS NULL THEN 'cron/cepcomunicacion-worker' ELSE {s.pick(USER_AGENTS, 94)} END,
       jsonb_build_object(
           'request_id', md5('req-{seed}-' || n)::uuid,
           'session', left(md5('ses-{seed}-' || (n / 3)), 24),
           'geo', CASE WHEN actor IS NOT NULL THEN jsonb_build_array(
                      round(27.6 + ({s.h(111)} % 1200000) / 1e6, 5),
                      round(-18.2 + ({s.h(112)} % 4800000) / 1e6, 5)) END,
           'method', CASE WHEN action IN ('view', 'download', 'export.csv') THEN 'GET'
                          WHEN action = 'delete' THEN 'DELETE' ELSE 'POST' END,
           'path', '/api/v1/' || entity || 's/' || entity_id,
           'status', (ARRAY[200, 200, 200, 200, 200, 201, 204, 302, 400, 403, 404, 500])[1 + {s.h(95)} % 12],
           'duration_ms', {s.h(96)} % 2500,
           'bytes', {s.h(97)} % 250000,
           'locale', {s.pick(["es-ES", "es-ES", "es-ES", "en-GB", "de-DE", "it-IT"], 98)},
           'changes', CASE WHEN action = 'update' THEN jsonb_build_object(
                          'field', {s.pick(["email", "phone", "city", "status", "grade", "notes", "price", "title"], 99)},
                          'old', left(t2.txt, 24), 'new', left(t3.txt, 24)) END,
           'tags', CASE WHEN {s.h(100)} % 4 = 0 THEN jsonb_build_array(entity, action, 'campus')
                        ELSE '[]'::jsonb END),
       t1.txt || CASE WHEN {s.h(101)} % 3 <> 0 THEN ' ' || t3.txt ELSE '' END
FROM (SELECT n,
             CASE WHEN {s.h(102)} % 10 = 0 THEN NULL
                  WHEN {s.h(102)} % 10 < 3 THEN {s.pick(STAFF, 103)} || '@cepcomunicacion.com'
                  ELSE 'alumno' || (1 + {s.h(104)} % {S}) || '@campus.cepcomunicacion.com' END AS actor,
             {s.pick(ACTIONS, 105)} AS action,
             {s.pick(ENTITIES, 106)} AS entity,
             1 + {s.h(107)} % {max(S, C)} AS entity_id
      FROM generate_series({lo}::bigint, {hi}) AS n) AS g
JOIN pg_temp.gen_text t1 ON t1.id = {s.text(108)}
JOIN pg_temp.gen_text t2 ON t2.id = {s.text(109)}
JOIN pg_temp.gen_text t3 ON t3.id = {s.text(110)}"""

    def revenue(lo, hi):  # pylint: disable=unused-argument
        return """
INSERT INTO reporting.monthly_revenue (month, course_id, payments, revenue)
SELECT date_trunc('month', paid_at AT TIME ZONE 'UTC')::date, course_id, count(*), sum(amount)
FROM public.payments WHERE paid GROUP BY 1, 2"""

    # phases: a phase starts when the one before it has finished (foreign keys)
    return [
        {"public.courses": (C, courses)},
        {"public.lessons": (L, lessons), "public.students": (S, students),
         "public.audit_log": (A, audit)},
        {"public.media_assets": (M, media), "public.enrollments": (E, enrollments)},
        {"public.payments": (P, payments)},
        {"reporting.monthly_revenue": (1, revenue)},
    ]


# --------------------------------------------------------------------------- running
class Loader:
    def __init__(self, conninfo, seed, jobs):
        self.conninfo = conninfo
        self.seed = seed
        self.jobs = jobs
        self.pool = text_pool(seed)
        self._local = threading.local()
        self._conns = []
        self._lock = threading.Lock()

    def connect(self):
        conn = psycopg2.connect(self.conninfo)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'; SET synchronous_commit = off")
        return conn

    def worker_conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            with conn.cursor() as cur:
                cur.execute("CREATE TEMP TABLE gen_text (id int PRIMARY KEY, txt text NOT NULL)")
                cur.execute("INSERT INTO pg_temp.gen_text SELECT i - 1, t FROM unnest(%s::text[]) "
                            "WITH ORDINALITY AS u(t, i)", (self.pool,))
                cur.execute("ANALYZE pg_temp.gen_text")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self):
        for conn in self._conns:
            conn.close()

    def run_batch(self, statement):
        with self.worker_conn().cursor() as cur:
            cur.execute(statement)


def log(msg, started):
    print("[%6.1fs] %s" % (time.monotonic() - started, msg), file=sys.stderr, flush=True)


def generate(conninfo, size="tiny", seed=42, jobs=2, reset=False, batch_rows=100000, quiet=False):
    """Apply schema.sql and fill the platform tables. Returns the summary dict."""
    started = time.monotonic()

    def say(msg):
        if not quiet:
            log(msg, started)

    target = parse_size(size)
    plan = plan_rows(target)
    admin = psycopg2.connect(conninfo)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            with open(SCHEMA_FILE, encoding="utf-8") as fh:
                cur.execute(fh.read())
            nonempty = []
            for table in TABLES:
                cur.execute(pgsql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
                    pgsql.Identifier(*table.split("."))))
                if cur.fetchone()[0]:
                    nonempty.append(table)
            if nonempty and not reset:
                raise RuntimeError("tables already hold data (%s); rerun with --reset to truncate "
                                   "them first, or use an empty database" % ", ".join(nonempty))
            if reset:
                cur.execute("TRUNCATE %s RESTART IDENTITY CASCADE" % ", ".join(TABLES))
            cur.execute("INSERT INTO public.app_settings (key, value, description, updated_at) "
                        "SELECT k, v::jsonb, d, timestamptz '2024-09-01 09:00:00+00' "
                        "FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(k, v, d)",
                        ([r[0] for r in app_settings_rows()],
                         [json.dumps(r[1], ensure_ascii=False) for r in app_settings_rows()],
                         [r[2] for r in app_settings_rows()]))
        say("schema applied; plan for %s (%d bytes): %s" % (size, target, json.dumps(plan)))

        loader = Loader(conninfo, seed, jobs)
        try:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                for phase in statements(seed, plan):
                    futures = []
                    for table, (rows, build) in phase.items():
                        for lo in range(1, rows + 1, batch_rows):
                            hi = min(rows, lo + batch_rows - 1)
                            fut = pool.submit(loader.run_batch, build(lo, hi))
                            futures.append((table, hi, rows, fut))
                    for table, hi, rows, fut in futures:
                        fut.result()
                        say("%-26s %9d / %d rows" % (table, hi, rows))
        finally:
            loader.close()

        with admin.cursor() as cur:
            for table in TABLES:
                if table in ("public.app_settings", "reporting.monthly_revenue"):
                    continue
                cur.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), "
                            "coalesce(max(id), 1), max(id) IS NOT NULL) FROM " + table, (table,))
            cur.execute("SELECT setval('public.invoice_number_seq', coalesce(max(invoice_number), 100000)) "
                        "FROM public.payments")
            say("analyze")
            cur.execute("ANALYZE")
            counts = {}
            data_bytes = 0
            for table in TABLES:
                cur.execute("SELECT count(*), pg_total_relation_size(%s) FROM " + table, (table,))
                rows, nbytes = cur.fetchone()
                counts[table] = rows
                data_bytes += nbytes
            cur.execute("SELECT pg_database_size(current_database())")
            db_size = cur.fetchone()[0]
    finally:
        admin.close()
    summary = {"size": size, "seed": seed, "target_bytes": target, "data_bytes": data_bytes,
               "database_size_bytes": db_size, "seconds": round(time.monotonic() - started, 2),
               "tables": counts}
    say("done: %.1f MB of data, database %.1f MB" % (data_bytes / MIB, db_size / MIB))
    return summary


def build_conninfo(args):
    params = {}
    for key in ("host", "port", "user", "dbname"):
        value = getattr(args, key)
        if value is not None:
            params[key] = str(value)
    return make_dsn(args.dsn or "", **params)


def create_database_if_missing(conninfo):
    params = parse_dsn(conninfo)
    dbname = params.get("dbname") or os.environ.get("PGDATABASE")
    if not dbname:
        raise RuntimeError("--create-db needs a database name (--dbname or dbname= in --dsn)")
    params["dbname"] = "postgres"
    conn = psycopg2.connect(make_dsn(**params))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))
    finally:
        conn.close()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Create the CEP Formación schema and fill it with deterministic data.",
        epilog="The password comes from PGPASSWORD or ~/.pgpass (libpq), never from a flag.")
    parser.add_argument("--dsn", help="libpq connection string (without password)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--user")
    parser.add_argument("--dbname")
    parser.add_argument("--size", default="tiny",
                        help="tiny (~2 MB), small (~20 MB), medium (~200 MB), large or 1GB, "
                             "or <n>KB/MB/GB (default: tiny)")
    parser.add_argument("--seed", type=int, default=42, help="same seed + size = same content")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="parallel connections (default: 2)")
    parser.add_argument("--reset", action="store_true", help="truncate platform tables first")
    parser.add_argument("--create-db", action="store_true", help="create the database if missing")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    try:
        parse_size(args.size)
        conninfo = build_conninfo(args)
        if args.create_db:
            create_database_if_missing(conninfo)
        summary = generate(conninfo, size=args.size, seed=args.seed, jobs=max(1, args.jobs),
                           reset=args.reset, quiet=args.quiet)
    except (ValueError, RuntimeError, psycopg2.Error) as exc:
        message = str(exc).strip()
        if "does not exist" in message and "database" in message and not args.create_db:
            message += " (add --create-db to create it)"
        print("generate_data: %s" % message, file=sys.stderr)
        return 1
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
