"""pipglr-builder: config -> render -> build -> verify -> publish for pipglr images."""
