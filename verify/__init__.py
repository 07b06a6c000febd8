"""`make verify STACK=<stack>`: prove a deployed platform works, per GPU pool, through the Kubernetes API.

For each GPU pool a short pod asks for one GPU; the check waits for it to get a node (from zero, where the
pool scales), checks that the node is the pool's and that the pod saw its GPU, that the node's GPU metrics
reach Prometheus, and that the platform's alert rules are loaded and none is firing; then it cleans up and
prints a table with the timings. Everything goes through the API server (Prometheus by its service proxy),
so the logic runs the same against recorded responses in the tests.
"""
