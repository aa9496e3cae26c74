from .unet_decoder import HGKDUNetDecoder

__all__ = ['HGKDUNetDecoder']
