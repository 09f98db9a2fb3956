"""What runs inside the sandbox: one job in, one result out (see DESIGN.md). Imports
nothing from `api` or `worker`."""
