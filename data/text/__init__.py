"""Text: preprocessing, the corpus of documents and Doc2Vec."""
