"""The one compiled part of pinapp: Singer's per-line loop on librdkafka (pinapp/singer/_rdkafka.c).

Everything else is in pyproject.toml. It links against the librdkafka the pinned
``confluent-kafka`` wheel ships (``confluent_kafka.libs/librdkafka-<hash>.so.1``: 2.9.0 carries
librdkafka 2.8.0, with SCRAM and SSL built in, depending only on libc), found in the build
environment (``[build-system] requires`` pins the same wheel) and loaded at run time from the
installed one (an rpath to it). The wheel has no headers: the C file compiles against Debian's
``librdkafka-dev`` (2.0.2), whose API the newer library exports a superset of. Debian's own
librdkafka is too old for SCRAM with Kafka 4 (librdkafka#4895, fixed in 2.6.1), and from 2.10
on an idempotent producer ships at about a third of the rate (docs/benchmarks.md): 2.8.0 is
the newest before that.
"""

import importlib.util
import shutil
import subprocess
import sysconfig
from pathlib import Path

from setuptools import Extension, setup


def _pkg_config(*args: str) -> list[str]:
    if shutil.which("pkg-config") is None:
        return []
    done = subprocess.run(  # noqa: S603 - pkg-config from PATH, as a build runs it
        ["pkg-config", *args, "rdkafka"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.split() if done.returncode == 0 else []


def _wheel_librdkafka() -> Path:
    """The librdkafka of the confluent-kafka wheel this build sees."""
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("building pinapp's Singer needs confluent-kafka (its librdkafka): pip install confluent-kafka")
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka-*.so.1"))
    if not found:
        raise SystemExit(f"no librdkafka-*.so.1 in {libs}: a confluent-kafka wheel for Linux carries one there")
    return found[0]


_LIB = _wheel_librdkafka()
# Where the installed wheel keeps it at run time: this interpreter's site-packages.
_RUNTIME_LIBS = Path(sysconfig.get_paths()["platlib"]) / "confluent_kafka.libs"

setup(
    ext_modules=[
        Extension(
            "pinapp.singer._rdkafka",
            sources=["pinapp/singer/_rdkafka.c"],
            extra_compile_args=[
                *_pkg_config("--cflags"),
                "-O2",
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                "-Wno-missing-field-initializers",
                "-Wno-cast-function-type",
            ],
            library_dirs=[str(_LIB.parent)],
            extra_link_args=[f"-l:{_LIB.name}", f"-Wl,-rpath,{_RUNTIME_LIBS}"],
        )
    ]
)
