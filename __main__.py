"""mlplatform: a GPU-ready Kubernetes platform for ML teams. See README.md."""

from stacks import main

main()
