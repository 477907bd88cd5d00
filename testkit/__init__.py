"""What the tests and the benchmarks share: the services as separate processes (`process_stack`), tiny ONNX models
with a valid model.json (`tiny_models`) and catalogue items from a dataset-shaped folder (`catalogue_items`).

Development code only: no service imports it, and the images do not carry it.
"""
