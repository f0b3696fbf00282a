"""Re-export of :mod:`monai_cluster.handlers.segmentation_outputs` (its former home), for existing imports and configs."""

from monai_cluster.handlers.segmentation_outputs import (
    SegmentationMetricsWriter,
    SegmentationOutputWriter,
    add_source_paths,
    summarize_metric,
)

__all__ = ["SegmentationMetricsWriter", "SegmentationOutputWriter", "add_source_paths", "summarize_metric"]
