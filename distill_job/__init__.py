"""Offline job turning a sentence transformer into a static token table (the Model2Vec technique)."""
