"""Building blocks shared by several methods; a component never imports a method."""
