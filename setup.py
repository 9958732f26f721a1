"""shoprec: search and recommendation for online shops on TFX, TFRS and pretrained BERT."""
from setuptools import find_packages, setup

setup(
    name="shoprec",
    version="0.1.0",
    description="Search and recommendation for online shops: TFX pipeline, TFRS two-tower "
    "retrieval with a BERT text tower, multi-task ranking, TensorFlow Serving.",
    packages=find_packages(include=["pipeline*", "trainer*", "serving*", "benchmarks*"]),
    package_data={"serving": ["tfserving/*", "web/templates/*.html", "web/templates/*/*.html",
                              "web/static/*"]},
    python_requires=">=3.11,<3.12",
    # The pinned environment lives in requirements/lock.txt (+ requirements/nodeps.txt);
    # `make env` installs it. These are the direct imports, unpinned, for reference.
    install_requires=[
        "tensorflow>=2.16,<2.17", "tf-keras>=2.16,<2.17", "tensorflow-transform>=1.16,<1.17",
        "tensorflow-recommenders>=0.7.7", "tensorflow-model-analysis>=0.47,<0.48",
        "tensorflow-serving-api>=2.16,<2.17", "tensorflow-text>=2.16,<2.17",
        "keras-hub>=0.31", "apache-beam>=2.72", "pandas", "pyarrow", "tqdm", "matplotlib",
        "fastapi", "uvicorn", "httpx", "prometheus-client",
    ],
)
