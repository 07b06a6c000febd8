"""mlplatform: a GPU-ready Kubernetes platform for ML teams. See README.md and docs/."""

from stacks import main

main()
