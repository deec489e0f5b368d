"""Shared training machinery (being split into modules: see the next commit)."""

from glcnet.engine.trainer import *  # noqa: F403
from glcnet.engine.trainer import _sync_batchnorm  # noqa: F401
