"""Files the API reads beside a pushed retrieval version: ``<serving_dir>/<subdir>/<version>/``.

The pipeline's side files (user segments, search terms) belong to the retrieval version they
were computed with, so their pushers run after the retrieval Pusher and copy only when it
pushed; the API loads the folder of the retrieval version it serves.
"""
import os

from absl import logging


def push_beside_retrieval(what: str, source_uri: str, names, pushed_model, pushed_artifact,
                          serving_dir: str, subdir: str) -> str | None:
    """Copy ``names`` (those that exist) from ``source_uri`` to ``<serving_dir>/<subdir>/
    <version>/`` and to ``pushed_artifact``'s folder when the retrieval Pusher pushed
    ``version``; records ``pushed`` (and ``pushed_destination``, ``pushed_version``) on
    ``pushed_artifact``. Returns the destination, or None when nothing was pushed."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    pushed = pushed_model.get_int_custom_property("pushed") == 1
    pushed_artifact.set_int_custom_property("pushed", int(pushed))
    if not pushed:
        logging.info("%s: the retrieval model was not pushed; %s neither", what, subdir)
        return None
    version = pushed_model.get_string_custom_property("pushed_version")
    destination = os.path.join(serving_dir, subdir, version)
    tf.io.gfile.makedirs(destination)
    for name in names:
        source = os.path.join(source_uri, name)
        if tf.io.gfile.exists(source):
            tf.io.gfile.copy(source, os.path.join(destination, name), overwrite=True)
            tf.io.gfile.copy(source, os.path.join(pushed_artifact.uri, name), overwrite=True)
    pushed_artifact.set_string_custom_property("pushed_destination", destination)
    pushed_artifact.set_string_custom_property("pushed_version", version)
    logging.info("%s: %s pushed to %s", what, subdir, destination)
    return destination
