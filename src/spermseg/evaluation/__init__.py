"""Evaluation protocols of the paper: inter-rater agreement (Table 2), ground-truth aggregation (Fig. 6,
Table 4) with STAPLE, blur robustness (Fig. 12), temporal consistency (Fig. 14) and directory evaluation
(``spermseg evaluate``). Heavy modules (the data layer, OpenCV) are imported inside the functions."""

from spermseg.evaluation.aggregation import AGGREGATES, StapleResult, aggregate, aggregate_masks, staple
from spermseg.evaluation.agreement import agreement, agreement_from_masks, format_agreement
from spermseg.evaluation.blur import DEFAULT_SIZES, blur_image, blur_robustness, blur_sigma
from spermseg.evaluation.evaluate import evaluate_directory, find_predictions, format_result, reference_masks
from spermseg.evaluation.temporal import temporal_consistency

__all__ = [
    "AGGREGATES",
    "DEFAULT_SIZES",
    "StapleResult",
    "aggregate",
    "aggregate_masks",
    "agreement",
    "agreement_from_masks",
    "blur_image",
    "blur_robustness",
    "blur_sigma",
    "evaluate_directory",
    "find_predictions",
    "format_agreement",
    "format_result",
    "reference_masks",
    "staple",
    "temporal_consistency",
]
