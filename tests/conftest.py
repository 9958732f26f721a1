"""Test-wide setup: tf-keras (Keras 2) for TFRS must be chosen before TensorFlow is imported."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
