"""Example: python -m benchmark train --task addition --arch gru"""

from .cli import main

raise SystemExit(main())
