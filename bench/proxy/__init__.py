"""The proxy CLIP and the stand-ins: what stands in for CLIP's weights and real data on machines that cannot download them."""
