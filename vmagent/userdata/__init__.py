"""cloud-init user data for vmagent VMs, rendered from a site description."""
