"""The one compiled part of pinapp: Singer's per-line loop on librdkafka (pinapp/singer/_rdkafka.c).

Everything else is in pyproject.toml. It builds against Debian's ``librdkafka-dev`` (the
librdkafka kcat uses), which ``make setup`` installs first.
"""

import shutil
import subprocess

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
            libraries=["rdkafka"],
            extra_link_args=[a for a in _pkg_config("--libs") if not a.startswith("-lrdkafka")],
        )
    ]
)
