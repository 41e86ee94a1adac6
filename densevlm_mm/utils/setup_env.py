"""Registering every module of the ``densevlm_mm`` scope."""
import datetime
import warnings

from mmengine import DefaultScope


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import all subpackages so that their modules are in the registries.

    Args:
        init_default_scope: also make ``densevlm_mm`` the current default scope (as mmdet's
            function of the same name does); if another scope is current, a new instance named
            ``densevlm_mm-<time>`` is created so both stay usable.
    """
    import densevlm_mm.datasets  # noqa: F401
    import densevlm_mm.engine  # noqa: F401
    import densevlm_mm.evaluation  # noqa: F401
    import densevlm_mm.models  # noqa: F401
    import densevlm_mm.models.algorithms  # noqa: F401
    import densevlm_mm.visualization  # noqa: F401
    from .checkpoint import allow_mmengine_checkpoint_meta
    allow_mmengine_checkpoint_meta()

    if not init_default_scope:
        return
    never_created = (DefaultScope.get_current_instance() is None
                     or not DefaultScope.check_instance_created('densevlm_mm'))
    if never_created:
        DefaultScope.get_instance('densevlm_mm', scope_name='densevlm_mm')
        return
    current = DefaultScope.get_current_instance()
    if current.scope_name != 'densevlm_mm':
        warnings.warn(f'The current default scope "{current.scope_name}" is not "densevlm_mm"; '
                      '`register_all_modules` makes a new default scope "densevlm_mm".')
        stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S%f')
        DefaultScope.get_instance(f'densevlm_mm-{stamp}', scope_name='densevlm_mm')
