"""LightningDataModules: where data comes from (OGB, Planetoid, synthetic MAG, faces)."""
