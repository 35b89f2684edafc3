"""Shared fixtures: the devices every op is tested on, and GPU marking.

Ops are parametrised over ``cpu`` (NumPy), ``strict`` (array-api-strict on its non-default device, which
refuses implicit conversion to NumPy just as CuPy does) and ``gpu`` (CuPy; skipped where there is no GPU).
"""
import numpy as np
import pytest

from minivae.backend import DeviceError, get_device


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a CUDA GPU (skipped where there is none)")
    for name, what in COUNTED.items():
        config.addinivalue_line("markers", f"{name}: a test of {what} (counted in the summary at the end)")


# ---- the counts of reliability tests: extreme inputs, bad inputs, faults -----------------------------------------------
#
# Tests carry the markers edge, bad_input and fault: the files written for them mark every test (pytestmark);
# earlier tests of the same kinds, in other files, are marked here by name. The summary at the end of a run
# counts both the test functions and their cases (a parametrised function is one function, many cases).
# `python -m pytest -q -m bad_input --collect-only` lists them.

COUNTED = {"edge": "numerics at extreme values", "bad_input": "bad user input",
           "fault": "faults in training or saving"}
EARLIER = {
    "edge": [
        "test_layers.py::test_activation_stable_at_extremes",
        "test_layers.py::test_relu_derivative_at_zero_is_zero",
        "test_likelihoods.py::test_bernoulli_nll_stable_at_extreme_logits",
        "test_logsumexp.py::test_matches_scipy",
        "test_derivations.py::test_bernoulli_stable_where_log_sigmoid_fails",
    ],
    "bad_input": [
        "test_cli.py::test_bad_input_one_line_no_traceback",
        "test_cli.py::test_argparse_errors_exit_2",
        "test_cli.py::test_out_is_a_file",
        "test_cli.py::test_evaluate_corrupted_checkpoint",
        "test_cli.py::test_gpu_without_cupy_is_one_line",
        "test_model.py::test_bad_beta_is_rejected",
        "test_train.py::test_bad_config_names_the_field",
        "test_train.py::test_resume_refuses_to_change_the_run",
        "test_checkpoint.py::test_missing_directory_truncated_corrupted_and_foreign_files",
        "test_checkpoint.py::test_wrong_version_and_wrong_architecture",
        "test_data.py::test_parse_idx_rejects_malformed_files_naming_them",
        "test_data.py::test_corrupt_files_give_an_error_naming_the_file",
        "test_data.py::test_labels_outside_0_to_9_are_refused",
        "test_data.py::test_load_dataset_bad_arguments",
        "test_data.py::test_data_dir_that_is_a_file",
        "test_data.py::test_synthetic_log_px_bad_input",
        "test_data.py::test_binarize_static_bad_input",
        "test_data.py::test_dynamic_binarize_shape_mismatch",
        "test_data.py::test_train_config_refuses_bad_data_options",
        "test_data.py::test_check_data_names_the_argument",
        "test_data.py::test_unknown_dataset",
        "test_data_cli.py::test_train_synthetic_needs_the_gaussian_likelihood",
        "test_data_cli.py::test_bad_data_options_one_line",
        "test_optim.py::test_load_state_dict_rejects_mismatch",
        "test_optim.py::test_bad_learning_rate_names_lr",
        "test_backend.py::test_unknown_device_names_the_argument",
        "test_evaluate.py::test_exact_needs_a_small_latent",
        "test_evaluate.py::test_bad_batch_size",
        "test_layers.py::test_unknown_activation_names_the_argument",
        "test_plots.py::test_bad_counts_and_inputs",
        "test_plots.py::test_cli_bad_input_one_line",
        "test_plots.py::test_image_pictures_need_an_image_shape",
        "test_plots.py::test_cli_latent_needs_z_dim_2",
        "test_plots.py::test_loss_curves_reject_bad_histories",
    ],
    "fault": [
        "test_checkpoint.py::test_interrupted_write_keeps_previous_file_and_leaves_no_temp",
        "test_train.py::test_non_finite_loss_stops_and_saves_nothing",
        "test_train.py::test_checkpoint_every_and_nan_keeps_the_last_good_checkpoint",
        "test_train.py::test_ctrl_c_saves_and_exits_cleanly_then_resume_finishes",
        "test_plots.py::test_unwritable_path_names_the_file_and_leaves_nothing",
        "test_data_download.py::test_download_function_leaves_nothing_on_failure",
    ],
}


def _function_id(item):
    return f"{item.path.name}::{item.originalname}"


def pytest_collection_modifyitems(config, items):
    by_name = {name: marker for marker, names in EARLIER.items() for name in names}
    for item in items:
        marker = by_name.get(_function_id(item))
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


def pytest_collection_finish(session):
    marked = {}
    for item in session.items:
        names = [name for name in COUNTED if item.get_closest_marker(name)]
        if names:
            marked[item.nodeid] = (names, _function_id(item))
    session.config._minivae_marked = marked


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line: per marker, the test functions, their cases, and (after a run) how many cases ran or were
    skipped (GPU cases where there is no GPU, root-only cases as root)."""
    marked = getattr(config, "_minivae_marked", None)
    if not marked:
        return
    outcome = {}
    for kind in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(kind, []):
            if getattr(report, "nodeid", None) in marked and (report.when == "call" or kind != "passed"):
                outcome.setdefault(report.nodeid, "skipped" if kind == "skipped" else "ran")
    parts = []
    for name in COUNTED:
        ids = [nodeid for nodeid, (names, _) in marked.items() if name in names]
        if not ids:
            continue
        functions = {marked[nodeid][1] for nodeid in ids}
        text = f"{name} {len(functions)} test functions, {len(ids)} cases"
        if outcome:
            ran = sum(outcome.get(nodeid) == "ran" for nodeid in ids)
            text += f" ({ran} ran, {sum(outcome.get(nodeid) == 'skipped' for nodeid in ids)} skipped)"
        parts.append(text)
    terminalreporter.write_line("minivae coverage: " + "; ".join(parts))


# A fixed hypothesis profile (tests/test_properties.py): deterministic, bounded, no deadline, no database.
try:
    from hypothesis import HealthCheck, settings
except ImportError:                                        # the property tests skip themselves
    pass
else:
    settings.register_profile("minivae", derandomize=True, max_examples=30, deadline=None, database=None,
                              print_blob=True, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])
    settings.load_profile("minivae")


def _gpu_available():
    try:
        get_device("gpu")
        return True
    except DeviceError:
        return False


GPU = _gpu_available()
DEVICE_PARAMS = ["cpu", "strict", pytest.param("gpu", marks=[pytest.mark.gpu,
                 pytest.mark.skipif(not GPU, reason="no CuPy/CUDA GPU")])]


@pytest.fixture(params=DEVICE_PARAMS)
def device(request):
    """Each device: NumPy, array-api-strict's device1, and CuPy where a GPU exists."""
    return get_device(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
