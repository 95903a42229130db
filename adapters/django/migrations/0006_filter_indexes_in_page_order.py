# The four filter indexes end with the page's order (occurred_at, then id): SQLite's planner then picks the
# filter's index even without statistics. On a large table each AddIndex blocks writes while it builds.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit_middleware', '0005_actor_time_indexes'),
    ]

    operations = [
        migrations.RemoveIndex(model_name='auditevent', name='audit_ev_ws_actor_time'),
        migrations.RemoveIndex(model_name='auditevent', name='audit_ev_ws_actorname_time'),
        migrations.RemoveIndex(model_name='auditevent', name='audit_ev_ws_event'),
        migrations.RemoveIndex(model_name='auditevent', name='audit_ev_ws_resource'),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['workspace_id', 'actor_id', 'occurred_at', 'id', 'event'],
                               name='audit_ev_ws_actor_time'),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['workspace_id', 'actor_name', 'occurred_at', 'id', 'event'],
                               name='audit_ev_ws_actorname_time'),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['workspace_id', 'event', 'occurred_at', 'id'], name='audit_ev_ws_event'),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['workspace_id', 'resource_type', 'resource_id', 'occurred_at', 'id'],
                               name='audit_ev_ws_resource'),
        ),
    ]
