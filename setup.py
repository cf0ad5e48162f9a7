"""The build's one part pyproject.toml cannot say without an experimental table: the access
log's records in C (fissile/observability/_records.c), optional, so that a machine without a
C compiler still installs fissile, which then formats and counts them in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fissile.observability._records",
            sources=["fissile/observability/_records.c"],
            optional=True,
        )
    ]
)
