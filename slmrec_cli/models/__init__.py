"""Models: SASRec (id baseline and id table) and the LLM recommender."""
