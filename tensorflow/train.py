"""Alias of pretrain.py: the seed README launches pretraining as `python train.py ...`."""

import pretrain

if __name__ == "__main__":
    pretrain.run()
