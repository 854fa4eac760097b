"""Quality of a static model on the development data in ``../shared/data``.

``datasets`` reads the files, ``embedders`` turns each system (our model, the teacher,
model2vec's distill) into a texts -> vectors function, ``tasks`` scores one embedder on
one task, and ``report`` prints the table and writes the JSON.
"""
