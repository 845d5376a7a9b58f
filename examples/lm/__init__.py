"""Language-model examples: a character-level GPT, exact SWR and its rivals."""
