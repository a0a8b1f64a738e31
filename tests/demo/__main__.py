from tests.demo.runner import main

raise SystemExit(main())
