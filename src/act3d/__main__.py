from act3d.cli import main

raise SystemExit(main())
