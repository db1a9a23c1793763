"""Ranking models: plain nn.Modules taking (dense (B, D), KJT) and returning logits (B, 1)."""
