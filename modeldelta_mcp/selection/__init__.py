"""Many candidates: compare_many and find_base on the report service, the find_base screen, and the executors
(local, Ray) that run the engine's work (docs/scale-out.md)."""
