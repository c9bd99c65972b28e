"""Face geometry and texture: morphable models, the 3DDFA regressor, rasterisation,
fitting, multi-view UV texture fusion, export and metrics."""
