"""What the tests and the benchmarks share: the services as separate processes (`process_stack`), tiny ONNX models
with a valid model.json (`tiny_models`), catalogue items from a dataset-shaped folder (`catalogue_items`) and
large images that stay small as files (`images`).

Development code only: no service imports it, and the images do not carry it.
"""
