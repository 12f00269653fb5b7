"""Images: reading and checking image files, and the image cache."""
