"""DCA-NAS: device-constraint-aware differentiable architecture search.

Importing this package registers ``DCANASConfig`` (model_type ``"dcanas"``) with ``AutoConfig`` and the
model classes with ``AutoModel`` / ``AutoModelForImageClassification``; saved models also carry their
modeling code (``auto_map``), so ``trust_remote_code=True`` loads them without hf-compress.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_dcanas import DCANASConfig
from .cost import Cost, count_macs, count_params, edge_op_costs, network_cost, network_cost_breakdown, op_cost
from .image_processing_dcanas import CIFAR10_MEAN, CIFAR10_STD, default_image_processor
from .modeling_dcanas import DCANASForImageClassification, DCANASModel, DCANASModelOutput
from .nb201_table import NB201Table, load_nb201_table
from .ops import OPS, build_op
from .spaces import (
    DARTS_SPACE,
    DARTS_V2,
    NB201_SPACE,
    SPACES,
    DartsGenotype,
    NB201Genotype,
    SearchSpace,
    get_space,
    parse_genotype,
)

AutoConfig.register(DCANASConfig.model_type, DCANASConfig, exist_ok=True)
AutoModel.register(DCANASConfig, DCANASModel, exist_ok=True)
AutoModelForImageClassification.register(DCANASConfig, DCANASForImageClassification, exist_ok=True)

DCANASConfig.register_for_auto_class()
DCANASModel.register_for_auto_class("AutoModel")
DCANASForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "Cost", "DARTS_SPACE", "DARTS_V2", "DCANASConfig", "DCANASForImageClassification",
    "DCANASModel", "DCANASModelOutput", "DartsGenotype", "NB201Genotype", "NB201Table", "NB201_SPACE", "OPS", "SPACES",
    "SearchSpace", "build_op", "count_macs", "count_params", "default_image_processor", "edge_op_costs",
    "get_space", "load_nb201_table", "network_cost", "network_cost_breakdown", "op_cost", "parse_genotype",
]
