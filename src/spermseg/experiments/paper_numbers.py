"""The paper's published numbers (Tables 2, 3 and 4), transcribed exactly from the paper text.

Source: E. Lewandowska et al., "Ensembling noisy segmentation masks of blurred sperm images" (SegSperm dataset),
``../shared/paper/*.md``. Values are copied digit for digit; nothing here is computed. The report shows them
beside our numbers only when the data is SegSperm itself (see :func:`is_segsperm`), because numbers on other
data are not comparable.

Naming: paper model names are mapped to registry names (``PAPER_MODEL_NAMES``), ensembles to ensemble kinds
(``PAPER_ENSEMBLE_NAMES``); parts are ``full``/``head``/``tail``; raters ``GT1``-``GT3``; aggregates
``intersection`` (full agreement), ``majority`` (majority voting), ``union`` (feeling lucky).
"""

from __future__ import annotations

from pathlib import Path

# The paper's names of our models and ensembles are Table 3's row labels (re-exported here for the report).
from spermseg.ensembling.table3 import PAPER_ENSEMBLE_NAMES, PAPER_MODEL_NAMES  # noqa: F401

# ---------------------------------------------------------------------------------------------------------------
# Table 2: inter-rater agreement on the 23 triple-labelled test images.
# Top: strict IoU (symmetric), per rater pair. Bottom: IoU' of Eq. (1) with a 3x3 kernel; row = reference rater,
# column = rater treated as the prediction.
TABLE2_IOU: dict[str, dict[tuple[str, str], float]] = {
    "full": {("GT1", "GT2"): 0.5767, ("GT1", "GT3"): 0.5790, ("GT2", "GT3"): 0.5661},
    "head": {("GT1", "GT2"): 0.7016, ("GT1", "GT3"): 0.6635, ("GT2", "GT3"): 0.7339},
    "tail": {("GT1", "GT2"): 0.4806, ("GT1", "GT3"): 0.4957, ("GT2", "GT3"): 0.4702},
}

# Table 2 (bottom), kernel 3x3: TABLE2_IOU_PRIME_K3[part][ref][pred].
TABLE2_IOU_PRIME_K3: dict[str, dict[str, dict[str, float]]] = {
    "full": {
        "GT1": {"GT1": 1.0, "GT2": 0.8356, "GT3": 0.8541},
        "GT2": {"GT1": 0.8428, "GT2": 1.0, "GT3": 0.8304},
        "GT3": {"GT1": 0.8485, "GT2": 0.8307, "GT3": 1.0},
    },
    "head": {
        "GT1": {"GT1": 1.0, "GT2": 0.9838, "GT3": 0.9866},
        "GT2": {"GT1": 0.9155, "GT2": 1.0, "GT3": 0.9638},
        "GT3": {"GT1": 0.8802, "GT2": 0.9376, "GT3": 1.0},
    },
    "tail": {
        "GT1": {"GT1": 1.0, "GT2": 0.7684, "GT3": 0.7888},
        "GT2": {"GT1": 0.7856, "GT2": 1.0, "GT3": 0.7624},
        "GT3": {"GT1": 0.7961, "GT2": 0.7648, "GT3": 1.0},
    },
}

# Section 5 text beside Table 2: mean IoU' over the six ordered rater pairs, for kernels 3x3 and 5x5.
TABLE2_MEAN_IOU_PRIME: dict[str, dict[str, float]] = {
    "3": {"full": 0.8404, "head": 0.9446, "tail": 0.7777},
    "5": {"full": 0.9315, "head": 0.9847, "tail": 0.8554},
}

# ---------------------------------------------------------------------------------------------------------------
# Table 3 (top block): base models on the test set vs GT1, mean and std over 5 training runs:
# {model: {metric: (mean, std)}}.
TABLE3_BASE: dict[str, dict[str, tuple[float, float]]] = {
    "att_unet": {"ap": (0.8334, 0.0023), "iou_0.5": (0.5876, 0.0043), "iou_opt": (0.6348, 0.0043)},
    "unet3p": {"ap": (0.8327, 0.0036), "iou_0.5": (0.5739, 0.0122), "iou_opt": (0.6286, 0.0137)},
    "unet": {"ap": (0.8273, 0.0056), "iou_0.5": (0.5710, 0.0141), "iou_opt": (0.6268, 0.0034)},
    "fc_densenet": {"ap": (0.8258, 0.0036), "iou_0.5": (0.5811, 0.0035), "iou_opt": (0.6219, 0.0042)},
    "unet_pp": {"ap": (0.8240, 0.0021), "iou_0.5": (0.5795, 0.0072), "iou_opt": (0.6278, 0.0012)},
    "sa_unet": {"ap": (0.8222, 0.0035), "iou_0.5": (0.5688, 0.0069), "iou_opt": (0.6224, 0.0051)},
    "uctransnet": {"ap": (0.8191, 0.0067), "iou_0.5": (0.5932, 0.0076), "iou_opt": (0.6255, 0.0070)},
    "manet": {"ap": (0.8138, 0.0065), "iou_0.5": (0.5936, 0.0075), "iou_opt": (0.6194, 0.0062)},
    "fpn": {"ap": (0.8126, 0.0025), "iou_0.5": (0.5851, 0.0059), "iou_opt": (0.6146, 0.0033)},
    "deeplabv3p": {"ap": (0.8073, 0.0054), "iou_0.5": (0.5837, 0.0097), "iou_opt": (0.6103, 0.0052)},
}

# Table 3 (top block, check marks): which base models the paper's selections E1-E4 contain.
TABLE3_SELECTIONS: dict[str, tuple[str, ...]] = {
    "E1": (
        "att_unet",
        "unet3p",
        "unet",
        "fc_densenet",
        "unet_pp",
        "sa_unet",
        "uctransnet",
        "manet",
        "fpn",
        "deeplabv3p",
    ),
    "E2": ("att_unet",),
    "E3": ("att_unet", "unet3p", "unet"),
    "E4": ("unet3p", "unet_pp", "uctransnet"),
}

# Table 3 (lower blocks): ensembles, {metric: {kind: {selection: (mean, std | None)}}}; ``avg`` has no
# parameters and so no std (the paper prints none).
TABLE3_ENSEMBLES: dict[str, dict[str, dict[str, tuple[float, float | None]]]] = {
    "ap": {
        "avg": {"E1": (0.8397, None), "E2": (0.8368, None), "E3": (0.8344, None), "E4": (0.8303, None)},
        "ens_s": {"E1": (0.8340, 0.0025), "E2": (0.8350, 0.0012), "E3": (0.8444, 0.0008), "E4": (0.8424, 0.0007)},
        "ens_is": {"E1": (0.8318, 0.0018), "E2": (0.8279, 0.0007), "E3": (0.8392, 0.0018), "E4": (0.8377, 0.0014)},
        "ens_concat": {"E1": (0.8260, 0.0019), "E2": (0.8310, 0.0019), "E3": (0.8392, 0.0015), "E4": (0.8389, 0.0015)},
        "ens_att_v1": {"E1": (0.8190, 0.0038), "E2": (0.8284, 0.0022), "E3": (0.8348, 0.0022), "E4": (0.8346, 0.0024)},
        "ens_att_v2": {"E1": (0.8305, 0.0025), "E2": (0.8332, 0.0015), "E3": (0.8419, 0.0022), "E4": (0.8369, 0.0039)},
    },
    "iou_0.5": {
        "avg": {"E1": (0.5967, None), "E2": (0.5922, None), "E3": (0.5932, None), "E4": (0.5939, None)},
        "ens_s": {"E1": (0.6353, 0.0019), "E2": (0.6426, 0.0035), "E3": (0.6440, 0.0036), "E4": (0.6442, 0.0035)},
        "ens_is": {"E1": (0.6384, 0.0025), "E2": (0.6395, 0.0023), "E3": (0.6398, 0.0031), "E4": (0.6424, 0.0046)},
        "ens_concat": {"E1": (0.6286, 0.0054), "E2": (0.6347, 0.0074), "E3": (0.6386, 0.0033), "E4": (0.6412, 0.0064)},
        "ens_att_v1": {"E1": (0.6337, 0.0050), "E2": (0.6401, 0.0036), "E3": (0.6406, 0.0058), "E4": (0.6447, 0.0030)},
        "ens_att_v2": {"E1": (0.6305, 0.0060), "E2": (0.6382, 0.0069), "E3": (0.6413, 0.0079), "E4": (0.6304, 0.0076)},
    },
    "iou_opt": {
        "avg": {"E1": (0.6443, None), "E2": (0.6410, None), "E3": (0.6442, None), "E4": (0.6423, None)},
        "ens_s": {"E1": (0.6382, 0.0012), "E2": (0.6455, 0.0015), "E3": (0.6469, 0.0017), "E4": (0.6472, 0.0009)},
        "ens_is": {"E1": (0.6394, 0.0023), "E2": (0.6436, 0.0014), "E3": (0.6434, 0.0010), "E4": (0.6465, 0.0015)},
        "ens_concat": {"E1": (0.6351, 0.0020), "E2": (0.6454, 0.0015), "E3": (0.6448, 0.0024), "E4": (0.6486, 0.0011)},
        "ens_att_v1": {"E1": (0.6360, 0.0041), "E2": (0.6429, 0.0026), "E3": (0.6451, 0.0022), "E4": (0.6469, 0.0019)},
        "ens_att_v2": {"E1": (0.6407, 0.0043), "E2": (0.6462, 0.0004), "E3": (0.6475, 0.0029), "E4": (0.6485, 0.0008)},
    },
}

# ---------------------------------------------------------------------------------------------------------------
# Table 4: IoU_opt on the 23 triple-labelled test images, {part: {gt_variant: {method: value}}}.
# Methods: the best base model (AttUnet), Avg|E3, EnsembleAttV2|E3, keyed "best_base", "avg|E3", "ens_att_v2|E3".
TABLE4_METHODS: tuple[str, ...] = ("best_base", "avg|E3", "ens_att_v2|E3")
TABLE4_BEST_BASE = "att_unet"
TABLE4: dict[str, dict[str, dict[str, float]]] = {
    "head": {
        "GT1": {"best_base": 0.7589, "avg|E3": 0.7649, "ens_att_v2|E3": 0.7875},
        "GT2": {"best_base": 0.7251, "avg|E3": 0.7352, "ens_att_v2|E3": 0.7422},
        "GT3": {"best_base": 0.7452, "avg|E3": 0.7522, "ens_att_v2|E3": 0.7506},
        "intersection": {"best_base": 0.5724, "avg|E3": 0.5784, "ens_att_v2|E3": 0.5612},
        "majority": {"best_base": 0.7151, "avg|E3": 0.7260, "ens_att_v2|E3": 0.7156},
        "union": {"best_base": 0.7821, "avg|E3": 0.7886, "ens_att_v2|E3": 0.8008},
    },
    "tail": {
        "GT1": {"best_base": 0.4850, "avg|E3": 0.4871, "ens_att_v2|E3": 0.4976},
        "GT2": {"best_base": 0.4354, "avg|E3": 0.4355, "ens_att_v2|E3": 0.4458},
        "GT3": {"best_base": 0.4939, "avg|E3": 0.4913, "ens_att_v2|E3": 0.5022},
        "intersection": {"best_base": 0.3853, "avg|E3": 0.3939, "ens_att_v2|E3": 0.3911},
        "majority": {"best_base": 0.5389, "avg|E3": 0.5437, "ens_att_v2|E3": 0.5491},
        "union": {"best_base": 0.4955, "avg|E3": 0.4932, "ens_att_v2|E3": 0.5023},
    },
    "full": {
        "GT1": {"best_base": 0.6007, "avg|E3": 0.6054, "ens_att_v2|E3": 0.6210},
        "GT2": {"best_base": 0.5557, "avg|E3": 0.5609, "ens_att_v2|E3": 0.5723},
        "GT3": {"best_base": 0.6145, "avg|E3": 0.6176, "ens_att_v2|E3": 0.6270},
        "intersection": {"best_base": 0.4930, "avg|E3": 0.5030, "ens_att_v2|E3": 0.4957},
        "majority": {"best_base": 0.6388, "avg|E3": 0.6482, "ens_att_v2|E3": 0.6496},
        "union": {"best_base": 0.6165, "avg|E3": 0.6185, "ens_att_v2|E3": 0.6305},
    },
}

# Table 1: the SegSperm split sizes (images); used to recognise the dataset.
SEGSPERM_SPLIT_SIZES: dict[str, int] = {"train": 432, "test": 119, "test_small": 23}


def is_segsperm(root: str | Path, split_sizes: dict[str, int] | None = None) -> bool:
    """Whether ``root`` holds the SegSperm dataset itself, so that the paper's numbers are comparable.

    The rule: no ``synth.json`` (our synthetic generator writes one) and the split sizes of Table 1 (432 train,
    119 test, 23 triple-labelled images). Another dataset in the SegSperm layout (e.g. the Sperm Parsing
    conversion used for development) is not SegSperm.

    Args:
        root: dataset root.
        split_sizes: image counts per split, when already known; otherwise the ``SPLIT/images`` folders are
            counted.

    Returns:
        True when the data matches SegSperm.
    """
    root = Path(root)
    if (root / "synth.json").exists():
        return False
    if split_sizes is None:
        split_sizes = {}
        for split in SEGSPERM_SPLIT_SIZES:
            images = root / split / "images"
            split_sizes[split] = sum(1 for p in images.iterdir() if p.is_file()) if images.is_dir() else 0
    return all(split_sizes.get(k) == v for k, v in SEGSPERM_SPLIT_SIZES.items())
