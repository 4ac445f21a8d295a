"""Text features of query words: CLIP's BPE tokenizer (torch-free), the text graph behind an LRU, and the
on-disk feature cache (TextBank)."""
