"""The seed README's name for `race.py`: same flags, same behaviour."""

from absl import app

import race

if __name__ == "__main__":
    app.run(race.main)
