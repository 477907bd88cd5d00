"""What the tests and the benchmarks share: the services as separate processes (`process_stack`), tiny ONNX models
with a valid model.json (`tiny_models`), catalogue items from a dataset-shaped folder (`catalogue_items`) and
large images that stay small as files (`images`).

The test helpers live here too, so that no test module imports another (tests/unit/test_test_layout.py): the
in-process services (`gateway_stack`, `service_helpers`, `http_api`), fakes (`gateway_fakes`, `indexer_fakes`,
`gated_model`), data (`indexer_fixtures`, `training_data`, `png_bytes`), load (`grpc_load`), settings
(`settings_env`), and `waiting`: wait for an observable condition, never sleep to let something happen.

Development code only: no service imports it, and the images do not carry it.
"""
