"""Infrastructure: the Pulumi program (``components/``) and the local AWS stack (``local/``)."""
