"""The seed README's name for `classifier.py`: same flags, same behaviour."""

from absl import app

import classifier

if __name__ == "__main__":
    app.run(classifier.main)
