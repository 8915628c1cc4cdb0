"""S3 object helpers every pipeline uses (``objects``): listings of objects and of every object version
under a location, batched deletes of objects and versions, merged tagging, lifecycle rules."""
