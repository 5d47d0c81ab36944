"""Configuration: reference keys and defaults, overrides, deprecations, clear errors."""
import logging

import pytest
import yaml

from engine.config import CONFIG_DIR, ConfigError, load_config

# REFERENCE_NPRA.md §9 (default_config.yml), the values sladd must keep.
REFERENCE_DEFAULTS = {
    "data_eier": None, "fylkesnummer": None, "force_fylke": False, "image_type": "Planar", "draw_mask": True,
    "delete_input": False, "file_access_retry_seconds": 10, "file_access_timeout_seconds": 60,
    "datetime_format": "%Y-%m-%d %H.%M.%S", "log_file_name": "{datetime}_{hostname}.log", "log_level": "DEBUG",
    "application_version": "0.2", "exif_mappenavn": "Vegbilder/{relative_input_dir}", "exif_top_dir": "tilSladding",
    "remove_imagetype_filepath": False, "flip_wkt": False, "remote_json": True, "local_json": False,
    "archive_json": False, "remote_preview": False, "local_preview": False, "archive_preview": False,
    "separate_preview_directory": None, "preview_dim": (2520, 1400), "preview_center": (0.45, 0.5),
    "mask_dilation_pixels": 4, "max_num_pixels": 1000000000, "use_cutouts": False,
    "cutout_step_factor": (1500, 1300), "cutout_dim_downscale": (3, 2), "mask_color": None, "blur": 15,
    "gray_blur": True, "normalized_gray_blur": True, "uncaught_exception_email": False,
    "processing_error_email": False, "finished_email": False, "email_attach_log_file": False,
    "write_exif_to_db": False, "db_max_n_accumulated_rows": 100, "db_max_n_errors": 1000,
    "db_max_cache_size": 1000, "table_name": "VEGBILDER", "table_primary_key": "bildeid",
}
REFERENCE_360 = {"image_type": "360", "application_version": "0.1", "exif_top_dir": "TilSladding",
                 "local_json": True, "remote_preview": True, "use_cutouts": True, "uncaught_exception_email": True,
                 "processing_error_email": True, "finished_email": True, "email_attach_log_file": True}


def test_default_profile_has_reference_defaults():
    cfg, path = load_config()
    assert path == CONFIG_DIR / "default.yml"
    for key, value in REFERENCE_DEFAULTS.items():
        assert getattr(cfg, key) == value, key


def test_360_profile_differs_only_where_reference_does():
    cfg, _ = load_config(profile="360")
    for key, value in {**REFERENCE_DEFAULTS, **REFERENCE_360}.items():
        assert getattr(cfg, key) == value, key


def test_user_file_overrides_only_named_keys(tmp_path):
    f = tmp_path / "mine.yml"
    f.write_text("blur: 30\nengine:\n  writers: 4\n")
    cfg, path = load_config(f)
    assert path == f and cfg.blur == 30 and cfg.engine.writers == 4
    assert cfg.engine.queue_size == 8 and cfg.mask_dilation_pixels == 4   # untouched (fix 17)


def test_user_file_with_image_type_360_picks_360_profile(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text('image_type: "360"\n')
    cfg, _ = load_config(f)
    assert cfg.use_cutouts and cfg.exif_top_dir == "TilSladding"


def test_reference_config_file_loads_with_deprecation_warnings(tmp_path, caplog):
    ref = dict(REFERENCE_DEFAULTS)
    ref.update({"force_remask": False, "lazy_paths": False, "enable_async": True, "max_num_async_workers": 2,
                "model_type": "Medium", "preview_dim": [2520, 1400], "preview_center": [0.45, 0.5],
                "cutout_step_factor": [1500, 1300], "cutout_dim_downscale": [3, 2]})
    f = tmp_path / "default_config.yml"
    f.write_text(yaml.safe_dump(ref))
    with caplog.at_level(logging.WARNING, logger="sladd"):
        cfg, _ = load_config(f)
    assert cfg.blur == 15
    warned = " ".join(r.getMessage() for r in caplog.records)
    for key in ("force_remask", "lazy_paths", "enable_async", "max_num_async_workers", "model_type"):
        assert f"`{key}`" in warned


def test_unknown_key_is_an_error_naming_it(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("blurr: 15\n")
    with pytest.raises(ConfigError, match=r"unknown key `blurr`"):
        load_config(f)


@pytest.mark.parametrize("text,key,fragment", [
    ("blur: -3\n", "blur", "-3"),
    ("log_level: LOUD\n", "log_level", "LOUD"),
    ("mask_color: [0, 300, 0]\n", "mask_color", "0..255"),
    ("engine:\n  device: tpu\n", "engine.device", "tpu"),
    ("force_fylke: true\n", "", "fylkesnummer"),
])
def test_invalid_values_fail_with_key_value_and_rule(tmp_path, text, key, fragment):
    f = tmp_path / "c.yml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert str(f) in msg and fragment in msg
    if key:
        assert f"`{key}`" in msg


def test_not_yaml_is_a_clear_error(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("blur: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
