"""Neuronpedia interoperability: its export layout written from an index (``export``) and
read into one (``importer``: a Spyglass export exactly, ``foreign``: Neuronpedia's own),
with the schemas of its records (``records``)."""
