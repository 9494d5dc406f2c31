"""segloss: does BCE+Dice beat BCE for brain-tumour MRI masks? A reproducible comparison."""

__version__ = "0.1.0"
