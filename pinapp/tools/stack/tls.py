"""The local stack's own certificate authority and the certificates its TLS listeners use."""

from __future__ import annotations

import shutil
from pathlib import Path

from config import Settings
from pinapp.errors import StackError
from pinapp.tools.stack.packages import run_checked

__all__ = ["KEYSTORE_PASSWORD", "ensure_certificate", "stack_ca_file"]


#: The broker's key store's password: a file of the local stack's, beside the key it protects.
KEYSTORE_PASSWORD = "pinapp-local-stack"  # noqa: S105 - the local test stack's, never a deployment's


def stack_ca_file(settings: Settings) -> Path:
    """The local stack's own CA certificate (PEM): what clients of its TLS listeners trust."""
    return settings.stack.data_dir.resolve() / "tls" / "ca.pem"


def ensure_certificate(settings: Settings, name: str) -> Path:
    """``<name>.pem`` and ``<name>.key`` for ``IP:127.0.0.1`` and ``localhost``, signed by the
    stack's CA (made first if need be), with Debian's openssl; their folder."""
    tls = stack_ca_file(settings).parent
    if (tls / f"{name}.pem").exists():
        return tls
    if shutil.which("openssl") is None:
        raise StackError("the stack's TLS listeners need openssl for their certificates (apt-get install openssl)")
    tls.mkdir(parents=True, exist_ok=True)
    if not (tls / "ca.pem").exists():
        run_checked(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem.tmp",
                "-days",
                "3650",
                "-subj",
                "/CN=pinapp local stack CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            "making the stack's CA",
            cwd=tls,
        )
        (tls / "ca.pem.tmp").rename(tls / "ca.pem")
    (tls / f"{name}.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    for argv, what in [
        (
            [
                "openssl",
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            f"making {name}'s key",
        ),
        (
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                f"{name}.pem.tmp",
                "-days",
                "3650",
                "-extfile",
                f"{name}.ext",
            ],
            f"signing {name}'s certificate",
        ),
    ]:
        run_checked(argv, what, cwd=tls)
    (tls / f"{name}.pem.tmp").rename(tls / f"{name}.pem")
    return tls
