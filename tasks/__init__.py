"""Pure compute and domain logic for CAS: configs, fingerprints, datasets,
generators, classifiers, metrics. No Prefect, no URLs: data comes in as
arrays, bytes or file objects."""
