"""The acceptance checklist of ../shared/reference/hardening.md §7, item by item: which tests
prove each of its 30 items.

`CHECKLIST` maps an item's number to the tests that assert its expected behaviour, as
`path::function` (or `path::Class::method`) from the repository root. The test below checks
the table itself, without importing or collecting anything (it parses the files with `ast`):
every item is there with at least one test, and every entry names a file that exists and a
test function defined in it, so a renamed or deleted test cannot silently leave an item
unproved.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

E2E = "tests/e2e"
STORE = "tests/store"
HOSTILE = f"{E2E}/test_hostile_inputs.py"
REGISTRY_HOSTILE = f"{STORE}/test_registry_hostile.py"
GUARDS = "tests/security/test_guards.py"
SECURITY_LIVE = f"{E2E}/test_security_live.py"

CHECKLIST: dict[int, tuple[str, ...]] = {
    # 1. digest traversal on the blob routes -> 400 `invalid digest format`, nothing touched
    1: (
        f"{HOSTILE}::test_1_malformed_digests_on_blob_routes_are_400_and_touch_nothing",
        f"{STORE}/test_blobs.py::test_parse_digest_refuses_everything_else",
        f"{STORE}/test_blobs.py::test_parse_digest_accepts_both_separators_and_cases",
        f"{STORE}/test_blobs.py::test_writer_refuses_a_bad_digest_before_creating_anything",
        f"{E2E}/test_native_api.py::test_blob_upload_with_digest_check",
    ),
    # 2. blob body != digest -> 400 `digest mismatch`; no file, no temp; re-POST and races
    2: (
        f"{HOSTILE}::test_2_a_body_that_is_not_its_digest_stores_nothing",
        f"{STORE}/test_blobs.py::test_mismatch_stores_nothing_and_names_both_digests",
        f"{STORE}/test_blobs.py::test_mismatch_leaves_an_existing_blob_untouched",
        f"{STORE}/test_blobs.py::test_abort_and_exceptions_remove_the_temp_file",
        f"{STORE}/test_blobs.py::test_upload_creates_then_finds_it_present",
        f"{E2E}/test_native_api.py::test_blob_upload_with_digest_check",
    ),
    # 3. model-name fuzz on every named route -> 400; nothing outside manifests/ touched
    3: (
        f"{HOSTILE}::test_3_name_fuzz_is_refused_before_the_file_system",
        f"{STORE}/test_names.py::test_invalid_names_are_refused",
        f"{STORE}/test_names.py::test_valid_names_parse_with_defaults",
        f"{STORE}/test_names.py::test_no_parsable_name_leaves_the_manifests_dir",
        f"{STORE}/test_names.py::test_store_rechecks_paths_of_forged_names",
        f"{STORE}/test_names.py::test_a_part_too_long_for_a_directory_name_is_invalid_not_a_crash",
        f"{STORE}/test_create.py::test_invalid_target_name",
        f"{STORE}/test_registry_pull.py::"
        "test_names_and_schemes_are_checked_before_anything_is_sent",
        f"{E2E}/test_errors.py::test_invalid_names_are_400",
    ),
    # 4. rogue registry manifest -> error, nothing written, bounded memory
    4: (
        f"{HOSTILE}::test_4_a_rogue_registry_manifest_gets_an_error_and_bounded_memory",
        f"{REGISTRY_HOSTILE}::test_a_manifest_digest_never_becomes_a_path",
        f"{REGISTRY_HOSTILE}::test_an_oversize_manifest_is_refused",
        f"{REGISTRY_HOSTILE}::test_too_many_layers_are_refused",
        f"{REGISTRY_HOSTILE}::test_a_manifest_that_is_not_json",
        f"{REGISTRY_HOSTILE}::test_one_digest_with_two_sizes_is_refused",
        f"{STORE}/test_manifest.py::test_parse_refuses_a_traversal_digest",
        f"{STORE}/test_manifest.py::test_parse_refuses_bad_sizes",
        f"{STORE}/test_manifest.py::test_parse_refuses_layer_names_that_escape",
        f"{STORE}/test_manifest.py::test_parse_caps_the_manifest_size",
        f"{STORE}/test_registry_pull.py::test_not_enough_disk_space_is_refused_before_downloading",
    ),
    # 5. registry serves wrong bytes -> `digest mismatch, file must be downloaded again`
    5: (
        f"{REGISTRY_HOSTILE}::test_wrong_bytes_are_a_digest_mismatch_and_nothing_is_kept",
        f"{REGISTRY_HOSTILE}::test_a_config_sharing_a_layers_digest_is_still_verified",
        f"{REGISTRY_HOSTILE}::test_a_shared_digest_redirected_elsewhere_is_still_verified",
        f"{REGISTRY_HOSTILE}::test_reading_stops_at_the_declared_size",
        f"{REGISTRY_HOSTILE}::test_a_range_answer_must_match_the_declared_size",
        f"{REGISTRY_HOSTILE}::test_an_encoded_blob_is_refused",
    ),
    # 6. auth realm on another host / SSRF -> no token sent; metadata addresses refused
    6: (
        f"{REGISTRY_HOSTILE}::test_an_auth_realm_on_another_host_gets_no_request",
        f"{REGISTRY_HOSTILE}::test_a_blob_redirected_to_a_cdn_is_fetched_without_the_token",
        f"{REGISTRY_HOSTILE}::test_a_redirect_to_another_scheme_is_refused",
        f"{REGISTRY_HOSTILE}::test_the_address_policy",
        f"{REGISTRY_HOSTILE}::test_a_metadata_address_in_the_name_is_refused_before_streaming",
        f"{REGISTRY_HOSTILE}::test_a_host_that_resolves_to_a_metadata_address_is_never_contacted",
        f"{REGISTRY_HOSTILE}::test_a_redirect_to_a_metadata_address_is_refused",
        f"{STORE}/test_registry_parts.py::test_the_realm_must_be_the_registrys_own_host",
        f"{STORE}/test_registry_push.py::test_a_push_realm_on_another_host_gets_no_request",
        f"{HOSTILE}::test_6_a_pull_from_a_metadata_address_is_refused",
    ),
    # 7. /api/create path tricks -> 400 within 1 s, no existence oracle, nothing read outside
    7: (
        f"{HOSTILE}::test_7_create_path_tricks_are_400_without_reading_outside_the_store",
        f"{STORE}/test_create.py::test_file_paths_must_be_relative",
        f"{STORE}/test_create.py::test_request_errors_are_raised_before_streaming",
        f"{STORE}/test_create.py::test_a_blob_that_was_never_uploaded",
        f"{E2E}/test_errors.py::test_create_errors",
    ),
    # 8. malformed GGUF corpus through /api/create -> 400 naming the problem, < 1 s, bounded
    8: (
        f"{HOSTILE}::test_8_malformed_gguf_uploads_are_400_naming_the_problem",
        "tests/loading/test_gguf_reader.py::test_malformed_file_is_refused",
        "tests/loading/test_gguf_reader.py::test_every_truncation_is_refused",
        "tests/loading/test_gguf_reader.py::"
        "test_a_huge_real_count_in_a_tiny_file_is_refused_before_allocating",
        "tests/loading/test_gguf_reader.py::test_not_a_gguf_at_all",
        "tests/fuzz/test_gguf_properties.py::test_a_broken_file_reads_safely_or_raises_gguf_error",
        "tests/fuzz/test_gguf_properties.py::test_random_bytes_after_a_header_read_safely",
        "tests/fuzz/test_fuzz_gguf.py::test_fuzz_gguf_runs_clean",
        f"{STORE}/test_create.py::test_a_malformed_gguf_is_refused_before_streaming",
    ),
    # 9. zip/archive import -> not supported: 400, nothing extracted
    9: (
        f"{HOSTILE}::test_9_archives_are_refused_with_400_and_never_extracted",
        f"{STORE}/test_create.py::test_files_that_are_not_gguf",
    ),
    # 10. malformed JSON -> 400 JSON error (never 500/422); OpenAI shape on /v1
    10: (
        f"{E2E}/test_errors.py::test_malformed_json_is_400",
        f"{E2E}/test_errors.py::test_wrong_field_types_are_400",
        f"{E2E}/test_errors.py::test_request_rules",
        f"{E2E}/test_openai.py::test_errors_in_openai_shape",
        f"{E2E}/test_structured.py::test_invalid_formats_are_400",
        "tests/test_settings.py::test_bad_go_durations_have_go_messages",
        f"{GUARDS}::test_malformed_chat_body_is_400_with_go_message",
        f"{GUARDS}::test_every_json_route_answers_malformed_bodies_400",
        f"{GUARDS}::test_unknown_fields_are_ignored",
        f"{GUARDS}::test_v1_malformed_body_is_openai_invalid_request",
    ),
    # 11. oversized / slow bodies -> 413 or timed close, memory bounded, others unaffected
    11: (
        f"{GUARDS}::test_declared_length_over_cap_is_413_before_reading",
        f"{GUARDS}::test_chunked_body_is_stopped_at_the_chunk_that_crosses_the_cap",
        f"{GUARDS}::test_blob_uploads_are_not_under_the_json_cap",
        f"{GUARDS}::test_stalled_json_body_is_408",
        f"{SECURITY_LIVE}::test_lying_content_length_is_413_at_once",
        f"{SECURITY_LIVE}::test_128_mib_body_is_refused_early_with_bounded_memory",
        f"{SECURITY_LIVE}::test_big_blob_upload_streams_to_disk",
        f"{SECURITY_LIVE}::test_slow_bodies_do_not_block_others",
        f"{SECURITY_LIVE}::test_slow_bodies_are_cut_off_at_the_deadline",
    ),
    # 12. routing -> 405 wrong method, 404 unknown path, GET/HEAD / and HEAD /api/tags
    12: (
        f"{E2E}/test_errors.py::test_wrong_method_and_path",
        f"{E2E}/test_native_api.py::test_root_and_version",
    ),
    # 13. DNS rebinding -> 403 for a foreign Host; API key when bound to every interface
    13: (
        f"{GUARDS}::test_foreign_hosts_are_refused",
        f"{GUARDS}::test_local_hosts_are_allowed",
        f"{GUARDS}::test_rebound_host_is_refused_on_every_route",
        f"{GUARDS}::test_host_check_is_off_when_bound_to_every_interface",
        f"{GUARDS}::test_missing_or_wrong_key_is_401",
        f"{GUARDS}::test_key_is_compared_in_constant_time",
        f"{GUARDS}::test_health_check_stays_open",
        f"{SECURITY_LIVE}::test_rebound_host_is_403",
        f"{SECURITY_LIVE}::test_rebound_host_over_a_raw_socket",
        f"{SECURITY_LIVE}::test_local_host_values_pass",
        f"{SECURITY_LIVE}::test_ollama_client_needs_the_key",
    ),
    # 14. cross-origin writes -> 403 before the handler; allowed origins get CORS
    14: (
        f"{GUARDS}::test_cross_origin_write_is_refused_before_the_handler",
        f"{GUARDS}::test_allowed_origin_gets_cors_headers",
        f"{GUARDS}::test_preflight_from_allowed_origin",
        f"{GUARDS}::test_ollama_origins_are_honoured",
        f"{SECURITY_LIVE}::test_cross_origin_write_is_refused",
        f"{SECURITY_LIVE}::test_configured_origin_gets_cors",
    ),
    # 15. unknown model -> 404 in Ollama's words (and not_found_error on /v1), no state left
    15: (
        f"{E2E}/test_errors.py::test_unknown_model_is_404_with_ollamas_text",
        f"{E2E}/test_openai.py::test_errors_in_openai_shape",
        f"{E2E}/test_logprobs_tokens.py::test_tokenize_and_detokenize",
        f"{STORE}/test_registry_push.py::test_push_of_a_model_that_is_not_there",
    ),
    # 16. context overflow -> truncation (never 500); /api/embed truncate:false -> 400
    16: (
        f"{E2E}/test_errors.py::test_16_an_embed_input_longer_than_the_context",
        f"{E2E}/test_errors.py::test_request_rules",
        f"{E2E}/test_logprobs_tokens.py::test_truncation_is_visible",
        "tests/test_generation.py::test_long_prompt_is_truncated_to_num_ctx",
        "tests/test_prompt.py::test_oldest_messages_are_dropped_to_fit_keeping_system_and_last",
        "tests/engine/test_truncate.py::test_truncated_prompt_always_leaves_room",
    ),
    # 17. keep_alive semantics: 0 unloads, negative keeps forever, durations, invalid -> 400
    17: (
        f"{E2E}/test_native_api.py::test_keep_alive_values_over_http",
        f"{E2E}/test_native_api.py::test_ps_load_and_unload",
        f"{E2E}/test_native_api.py::test_keep_alive_zero_unloads_after_the_request",
        "tests/test_scheduler.py::test_keep_alive_zero_unloads_when_idle_and_expiry_unloads_later",
        "tests/test_scheduler.py::test_omitted_keep_alive_leaves_the_current_one",
        "tests/test_settings.py::test_request_keep_alive",
        f"{E2E}/test_errors.py::test_wrong_field_types_are_400",
    ),
    # 18. client disconnect -> generation stops within ~1 s, slot freed, next request served
    18: (
        f"{E2E}/test_engine_faults.py::"
        "test_18_clients_that_leave_before_the_first_token_cost_nothing",
        f"{E2E}/test_concurrency.py::test_a_disconnected_client_frees_its_slot_within_one_step",
        f"{STORE}/test_registry_pull.py::test_a_pull_abandoned_by_its_client_stops_and_resumes",
        "tests/engine/test_batch.py::test_a_removed_sequence_frees_its_slot_for_the_next",
    ),
    # 19. kill -9 mid-upload / mid-pull -> invariant after restart, resumable, temp cleaned
    19: (
        f"{STORE}/test_crash.py::test_kill_half_way_through_an_upload",
        f"{STORE}/test_crash_points.py::test_kill_during_blob_upload",
        f"{STORE}/test_crash_points.py::test_kill_during_pull",
        f"{E2E}/test_persistence.py::"
        "test_kill_during_upload_and_create_leaves_nothing_half_written",
        f"{E2E}/test_registry.py::test_an_interrupted_pull_resumes_without_fetching_twice",
        f"{STORE}/test_registry_pull.py::test_a_pull_cut_mid_blob_resumes_where_it_stopped",
        f"{STORE}/test_store.py::test_clean_temporary_removes_temp_files_everywhere",
    ),
    # 20. kill -9 mid-manifest write -> old or new manifest, never truncated; bad ones skipped
    20: (
        f"{STORE}/test_corrupted_store.py::test_the_server_starts_and_lists_the_models_it_can_read",
        f"{STORE}/test_crash.py::test_kill_before_a_new_manifest_is_published",
        f"{STORE}/test_crash.py::test_kill_while_replacing_a_manifest_keeps_the_old_one",
        f"{STORE}/test_crash_points.py::test_kill_during_create",
        f"{STORE}/test_crash_points.py::test_kill_while_recreating_a_model",
        f"{STORE}/test_crash_points.py::test_kill_during_copy",
        f"{STORE}/test_crash_points.py::test_kill_during_delete",
        f"{STORE}/test_store.py::test_listing_survives_stray_and_broken_files",
    ),
    # 21. disk full during upload/pull/create -> clear error, clean, succeeds without restart
    21: (
        f"{STORE}/test_disk_full.py::test_the_limit_is_a_real_efbig",
        f"{STORE}/test_disk_full.py::test_blob_upload_on_a_full_disk_fails_cleanly_then_succeeds",
        f"{STORE}/test_disk_full.py::test_create_whose_new_layer_hits_a_full_disk_leaves_no_model",
        f"{STORE}/test_disk_full.py::test_create_whose_manifest_hits_a_full_disk_keeps_the_old_version",
        f"{STORE}/test_disk_full.py::test_pull_on_a_full_disk_fails_cleanly_then_succeeds",
        f"{STORE}/test_disk_full.py::test_http_blob_upload_on_a_full_disk_is_507_then_201",
        f"{STORE}/test_disk_full.py::test_http_create_on_a_full_disk_then_the_same_request_succeeds",
        f"{STORE}/test_disk_full.py::test_http_pull_on_a_full_disk_then_the_same_request_succeeds",
        f"{STORE}/test_disk_full.py::test_http_pull_refused_up_front_when_the_disk_cannot_hold_it",
        f"{STORE}/test_registry_pull.py::test_a_full_disk_fails_the_pull_and_the_next_one_resumes",
        f"{STORE}/test_registry_pull.py::test_not_enough_disk_space_is_refused_before_downloading",
    ),
    # 22. corrupted store -> server starts, healthy models listed, clear error for the bad one
    22: (
        f"{STORE}/test_corrupted_store.py::test_the_server_starts_and_lists_the_models_it_can_read",
        f"{STORE}/test_corrupted_store.py::test_a_damaged_model_is_a_json_error_and_the_server_keeps_serving",
        f"{STORE}/test_corrupted_store.py::test_a_bit_flip_in_the_weights_loads_and_verify_reports_it",
        f"{STORE}/test_corrupted_store.py::test_the_damage_can_be_repaired_without_a_restart",
        f"{STORE}/test_store.py::test_listing_survives_stray_and_broken_files",
        f"{STORE}/test_store.py::test_model_reads_a_corrupt_layer_as_an_error",
        f"{STORE}/test_store.py::test_delete_keeps_blobs_while_another_manifest_is_unreadable",
        f"{STORE}/test_blobs.py::test_read_bytes_reports_a_corrupt_blob",
    ),
    # 23. delete / copy / create while generating; GC never deletes a fresh blob
    23: (
        "tests/server/test_store_while_generating.py::test_delete_while_streaming",
        "tests/server/test_store_while_generating.py::test_copy_and_create_while_streaming",
        f"{STORE}/test_store_races.py::test_creates_copies_and_deletes_racing_keep_the_store_whole",
        f"{STORE}/test_store.py::test_delete_collects_only_unshared_blobs_and_prunes_dirs",
        f"{STORE}/test_store.py::test_prune_blobs_spares_young_and_referenced_blobs",
        f"{E2E}/test_native_api.py::test_copy_and_delete",
        "tests/test_scheduler.py::test_unload_of_a_busy_model_waits_for_its_request",
    ),
    # 24. backend failure mid-stream -> one NDJSON error line / 500 JSON; the model not wedged
    24: (
        f"{E2E}/test_engine_faults.py::"
        "test_24_a_step_that_fails_mid_stream_does_not_wedge_the_model",
        "tests/server/test_http_fake.py::test_error_mid_stream_is_the_last_line",
        "tests/server/test_http_fake.py::test_error_before_streaming_has_its_status",
        "tests/server/test_http_fake.py::"
        "test_openai_error_mid_stream_is_an_error_event_not_a_truncation",
    ),
    # 25. SIGTERM with in-flight streams -> new requests refused, stream completes, exit 0
    25: (
        f"{E2E}/test_concurrency.py::test_sigterm_finishes_the_stream_in_flight_then_exits",
    ),
    # 26. queue bound -> 503 `server busy …` with Retry-After, no resets, no 500s
    26: (
        f"{E2E}/test_concurrency.py::"
        "test_n_plus_10_calls_on_two_busy_models_get_503_with_retry_after",
        f"{E2E}/test_concurrency.py::test_the_queue_bound_answers_503",
        f"{GUARDS}::test_server_busy_503_carries_retry_after",
        f"{GUARDS}::test_error_headers_add_retry_after_to_503_only",
    ),
    # 27. model juggling with max_loaded_models=1 -> no deadlock, no busy unload, ps truthful
    27: (
        f"{E2E}/test_engine_faults.py::test_27_model_juggling_under_a_one_model_limit",
        f"{E2E}/test_concurrency.py::test_one_loaded_model_at_most_evicts_the_idle_one",
        "tests/test_scheduler.py::test_least_recently_used_idle_model_is_evicted",
        "tests/test_scheduler.py::test_unload_of_a_busy_model_waits_for_its_request",
    ),
    # 28. same-model parallelism: num_parallel + 1 chats, no stall, no cross-talk
    28: (
        f"{E2E}/test_concurrency.py::test_num_parallel_plus_one_concurrent_chats_do_not_cross_talk",
        f"{E2E}/test_concurrency.py::"
        "test_eight_concurrent_streams_finish_and_match_their_solo_answers",
        "tests/engine/test_batch_invariance.py::test_each_answer_is_the_same_alone_or_in_any_mix",
        f"{E2E}/test_batch_invariance.py::"
        "test_every_answer_equals_its_solo_run_in_random_concurrent_mixes",
        "tests/engine/test_batch.py::test_seeded_sampling_is_per_sequence",
    ),
    # 29. soak -> no 5xx, bounded RSS, fds back to baseline, no temp files, disk invariant
    29: (
        f"{E2E}/test_soak.py::test_soak",
    ),
    # 30. concurrent store operations -> one copy of each blob, no lost manifest, invariant
    30: (
        f"{STORE}/test_registry_pull.py::test_concurrent_pulls_of_one_model_share_the_download",
        f"{STORE}/test_store_races.py::test_creates_copies_and_deletes_racing_keep_the_store_whole",
        f"{HOSTILE}::test_2_a_body_that_is_not_its_digest_stores_nothing",
        f"{STORE}/test_crash_points.py::test_kill_during_pull",
    ),
}


@cache
def defined_tests(path: Path) -> frozenset[str]:
    """`name` and `Class::name` of every function a file defines (parsed, not imported)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{item.name}" for item in node.body
                         if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))
    return frozenset(names)


def test_every_checklist_item_names_existing_tests() -> None:
    """All 30 items are in the table, each with at least one test, and every entry is a
    `test_…` function defined in a file that exists."""
    assert sorted(CHECKLIST) == list(range(1, 31))
    problems = [f"item {item}: no test" for item, tests in CHECKLIST.items() if not tests]
    for item, tests in sorted(CHECKLIST.items()):
        for entry in tests:
            path, sep, function = entry.partition("::")
            file = ROOT / path
            if not sep or not function.split("::")[-1].startswith("test"):
                problems.append(f"item {item}: {entry!r} is not path::test_function")
            elif not file.is_file():
                problems.append(f"item {item}: {path} does not exist")
            elif function not in defined_tests(file):
                problems.append(f"item {item}: {path} defines no {function}")
        if len(set(tests)) != len(tests):
            problems.append(f"item {item}: a test is listed twice")
    assert not problems, "\n".join(problems)
