"""In-process apps for the HTTP layer's tests: the real composition (`server.build_app`) with a real back end."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
