"""Self-supervised methods, by ``--method`` name. Adding one is one file and one line in ``METHODS``."""

from __future__ import annotations

from mosl_cli.methods.backbone import SCOPES, PooledBackbone
from mosl_cli.methods.base import MethodOutput, SSLMethod, embedding_std
from mosl_cli.methods.mim import MIM
from mosl_cli.methods.moco import MoCo
from mosl_cli.methods.simclr import SimCLR
from mosl_cli.methods.simsiam import SimSiam

METHODS: dict[str, type[SSLMethod]] = {
    SimCLR.name: SimCLR,
    MoCo.name: MoCo,
    SimSiam.name: SimSiam,
    MIM.name: MIM,
}

__all__ = ["METHODS", "SCOPES", "MethodOutput", "PooledBackbone", "SSLMethod", "embedding_std"]
