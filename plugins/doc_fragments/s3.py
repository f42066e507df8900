# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # S3 connection options; mirrors offsite.connection_argument_spec()
    DOCUMENTATION = r'''
options:
  bucket:
    description:
      - Name of the S3 bucket holding the offsite copies.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of this host's copies in the bucket (one per host), for example C(web1) or C(backups/web1).
      - Defaults to the short host name of the machine the module runs on. On a rebuilt server whose name changed,
        name the old server's prefix explicitly.
    type: str
  endpoint_url:
    description:
      - URL of an S3-compatible server (MinIO, Ceph RGW, a hosting provider's object storage), for example
        C(https://s3.example.net). Path-style addressing is used with it. AWS S3 when unset.
    type: str
    aliases: [s3_url]
  region:
    description:
      - Region of the bucket. C(us-east-1) when unset (most S3-compatible servers ignore it).
    type: str
    aliases: [aws_region]
  access_key:
    description:
      - S3 access key id. When unset, the C(AWS_ACCESS_KEY_ID) environment variable, O(profile) or the default
        credential chain of boto3 is used.
      - Never put on a command line, in a log or in a result.
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description:
      - S3 secret access key matching O(access_key). When unset, C(AWS_SECRET_ACCESS_KEY), O(profile) or the
        default credential chain is used.
    type: str
    aliases: [aws_secret_access_key]
  session_token:
    description:
      - Session token of temporary credentials.
    type: str
    aliases: [aws_session_token]
  profile:
    description:
      - Named profile in C(~/.aws/credentials) or C(~/.aws/config) of the user the module runs as.
    type: str
    aliases: [aws_profile]
  validate_certs:
    description:
      - Verify the TLS certificate of O(endpoint_url).
    type: bool
    default: true
requirements:
  - boto3 (Debian package C(python3-boto3)) on the host the module runs on.
'''
