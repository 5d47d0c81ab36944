"""Array kernels: one code path for NumPy (host) and CuPy (device), picked from the inputs."""
from kernels._xp import cv2_or_none, get_array_module, on_device, to_host
from kernels.boxes import batched_nms, box_to_int, iou_matrix, nms, scale_boxes, shape_mask
from kernels.draw import MODES, blur_ksize, draw_regions, group_regions, region_ksize
from kernels.filters import box_filter_region, reflect101, rgb_to_gray
from kernels.morphology import dilate_square
from kernels.resize import downscale_mean, letterbox, padded_planes, resize_bilinear
from kernels.merge import BOX_MERGES, MergedInstances, class_counts, cluster_boxes, merge_boxes, merge_instances
from kernels.tiling import crop_view, cutout_windows, seam_window, spread_windows, tile_grid, wrap_regions

__all__ = ["get_array_module", "cv2_or_none", "on_device", "to_host", "batched_nms", "box_to_int", "iou_matrix", "nms", "scale_boxes",
           "shape_mask", "MODES", "blur_ksize", "region_ksize", "draw_regions", "group_regions", "box_filter_region",
           "reflect101", "rgb_to_gray", "dilate_square", "letterbox", "resize_bilinear", "cutout_windows",
           "crop_view", "seam_window", "downscale_mean", "padded_planes", "wrap_regions", "BOX_MERGES", "MergedInstances", "class_counts",
           "merge_boxes", "merge_instances", "cluster_boxes", "tile_grid", "spread_windows"]
