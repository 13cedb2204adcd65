"""The code MLflow runs to build the VLA's pyfunc model ("models from code": the model is this file plus the saved
VLA directory, never a pickled object). It is copied into every logged VLA model as ``python_model.py``; run it
only through MLflow (``training.vla_pyfunc.save_vla_pyfunc``), not as a product import."""

import mlflow

from training.vla_pyfunc import VLAPyfunc

mlflow.models.set_model(VLAPyfunc())
